//! Reading configurations from every source, every error path, and building
//! working backends from them.

// Test code: a failed unwrap is a failed test (clippy exempts only #[test] fns).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use state_api::{
    BackendContext, CheckpointStorageAccess, KeyGroupRange, KeyedStateBackendExt,
    ListStateDescriptor, SnapshotOptions, StateError, ValueStateDescriptor,
};
use state_changelog::{DstlConfig, MaterializationConfig};
use state_config::{BackendType, OPTIONS, StateConfig, env_var_name};
use state_rocksdb::{CompactionStyle, PredefinedOptions};
use state_runtime::CheckpointingMode;
use state_runtime::coordinator::CheckpointConfig;

/// Every option set to a value other than its default, as flat YAML.
const FULL_FLAT_YAML: &str = "
state.backend.type: rocksdb
execution.checkpointing.incremental: true
execution.checkpointing.dir: memory:///ckpt
execution.checkpointing.savepoint-dir: file:///savepoints
execution.checkpointing.num-retained: 3
execution.checkpointing.interval: 30 s
execution.checkpointing.min-pause: 5 s
execution.checkpointing.max-concurrent-checkpoints: 2
execution.checkpointing.timeout: 3 min
execution.checkpointing.tolerable-failed-checkpoints: 4
execution.checkpointing.mode: AT_LEAST_ONCE
execution.checkpointing.unaligned.enabled: true
execution.checkpointing.aligned-checkpoint-timeout: 2 s
execution.state-recovery.path: /savepoints/savepoint-1-2
execution.state-recovery.ignore-unclaimed-state: true
state.changelog.enabled: true
state.changelog.periodic-materialize.enabled: true
state.changelog.periodic-materialize.interval: 2 min
state.changelog.max-failures-allowed: 5
state.changelog.dstl.dfs.preemptive-persist-threshold: 1 mb
state.changelog.dstl.dfs.batch.persist-delay: 20 ms
state.changelog.dstl.dfs.batch.persist-size-threshold: 2mb
state.changelog.dstl.dfs.upload.num-threads: 2
state.changelog.dstl.dfs.upload.max-in-flight: 50 mb
state.changelog.dstl.dfs.upload.timeout: 2 s
state.changelog.dstl.dfs.upload.max-attempts: 4
state.changelog.dstl.dfs.upload.next-attempt-delay: 250ms
state.backend.rocksdb.localdir: /var/lib/state
state.backend.rocksdb.memory.fixed-per-tm: 64 mb
state.backend.rocksdb.memory.write-buffer-ratio: 0.25
state.backend.rocksdb.predefined-options: FLASH_SSD_OPTIMIZED
state.backend.rocksdb.checkpoint.transfer.thread.num: 2
state.backend.rocksdb.checkpoint.eager-upload: false
state.backend.rocksdb.compaction.style: UNIVERSAL
";

const FULL_NESTED_YAML: &str = "
state:
  backend:
    type: rocksdb
    rocksdb:
      localdir: /var/lib/state
      memory:
        fixed-per-tm: 64 mb
        write-buffer-ratio: 0.25
      predefined-options: flash_ssd_optimized
      checkpoint.transfer.thread.num: 2
      checkpoint.eager-upload: false
      compaction.style: universal
  changelog:
    enabled: true
    periodic-materialize: {enabled: true, interval: 2min}
    max-failures-allowed: 5
    dstl.dfs:
      preemptive-persist-threshold: 1048576
      batch: {persist-delay: 20, persist-size-threshold: 2 mb}
      upload:
        num-threads: 2
        max-in-flight: 50 mb
        timeout: 2000
        max-attempts: 4
        next-attempt-delay: 250 ms
execution:
  checkpointing:
    incremental: true
    dir: memory:///ckpt
    savepoint-dir: file:///savepoints
    num-retained: 3
    interval: 30000
    min-pause: 5s
    max-concurrent-checkpoints: 2
    timeout: 180 s
    tolerable-failed-checkpoints: 4
    mode: at_least_once
    unaligned: {enabled: true}
    aligned-checkpoint-timeout: 2000 ms
  state-recovery:
    path: /savepoints/savepoint-1-2
    ignore-unclaimed-state: true
";

const FULL_TOML: &str = r#"
"state.backend.type" = "rocksdb"
[execution.checkpointing]
incremental = true
dir = "memory:///ckpt"
savepoint-dir = "file:///savepoints"
num-retained = 3
interval = "30 s"
min-pause = "5 s"
max-concurrent-checkpoints = 2
timeout = "3 min"
tolerable-failed-checkpoints = 4
mode = "AT_LEAST_ONCE"
unaligned.enabled = true
aligned-checkpoint-timeout = "2 s"
[execution.state-recovery]
path = "/savepoints/savepoint-1-2"
ignore-unclaimed-state = true
[state.changelog]
enabled = true
periodic-materialize.enabled = true
periodic-materialize.interval = "120 s"
max-failures-allowed = 5
[state.changelog.dstl.dfs]
preemptive-persist-threshold = "1 mb"
batch.persist-delay = "20 ms"
batch.persist-size-threshold = "2 mb"
upload.num-threads = 2
upload.max-in-flight = "50 mb"
upload.timeout = "2 s"
upload.max-attempts = 4
upload.next-attempt-delay = "250 ms"
[state.backend.rocksdb]
localdir = "/var/lib/state"
memory.fixed-per-tm = "64 mb"
memory.write-buffer-ratio = 0.25
predefined-options = "FLASH_SSD_OPTIMIZED"
checkpoint.transfer.thread.num = 2
checkpoint.eager-upload = false
compaction.style = "UNIVERSAL"
"#;

const FULL_JSON: &str = r#"{
  "state.backend.type": "rocksdb",
  "execution": {
    "checkpointing": {"incremental": true, "dir": "memory:///ckpt", "savepoint-dir": "file:///savepoints", "num-retained": 3,
      "interval": "30 s", "min-pause": "5 s", "max-concurrent-checkpoints": 2, "timeout": "3 min",
      "tolerable-failed-checkpoints": 4, "mode": "AT_LEAST_ONCE", "unaligned.enabled": true,
      "aligned-checkpoint-timeout": "2 s"},
    "state-recovery": {"path": "/savepoints/savepoint-1-2", "ignore-unclaimed-state": true}
  },
  "state.changelog": {
    "enabled": true,
    "periodic-materialize.enabled": true,
    "periodic-materialize.interval": "2 min",
    "max-failures-allowed": 5,
    "dstl.dfs.preemptive-persist-threshold": "1 mb",
    "dstl.dfs.batch.persist-delay": "20 ms",
    "dstl.dfs.batch.persist-size-threshold": "2 mb",
    "dstl.dfs.upload.num-threads": 2,
    "dstl.dfs.upload.max-in-flight": "50 mb",
    "dstl.dfs.upload.timeout": "2 s",
    "dstl.dfs.upload.max-attempts": 4,
    "dstl.dfs.upload.next-attempt-delay": "250 ms"
  },
  "state.backend.rocksdb": {
    "localdir": "/var/lib/state",
    "memory.fixed-per-tm": "64 mb",
    "memory.write-buffer-ratio": 0.25,
    "predefined-options": "FLASH_SSD_OPTIMIZED",
    "checkpoint.transfer.thread.num": 2,
    "checkpoint.eager-upload": false,
    "compaction.style": "UNIVERSAL"
  }
}"#;

/// The flat YAML as (key, value) pairs.
fn full_pairs() -> Vec<(String, String)> {
    FULL_FLAT_YAML
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn config_error(result: state_api::Result<StateConfig>) -> (String, String) {
    match result {
        Err(StateError::Config { key, message }) => (key, message),
        Err(other) => panic!("expected a Config error, got {other}"),
        Ok(config) => panic!("expected a Config error, got {config:?}"),
    }
}

fn yaml_error(yaml: &str) -> (String, String) {
    config_error(StateConfig::from_yaml_str(yaml))
}

#[test]
fn every_format_reads_to_the_same_configuration() {
    let flat = StateConfig::from_yaml_str(FULL_FLAT_YAML).unwrap();
    let nested = StateConfig::from_yaml_str(FULL_NESTED_YAML).unwrap();
    let toml = StateConfig::from_toml_str(FULL_TOML).unwrap();
    let json = StateConfig::from_json_str(FULL_JSON).unwrap();
    let pairs = StateConfig::from_pairs(full_pairs()).unwrap();
    let env =
        StateConfig::from_env_vars(full_pairs().into_iter().map(|(k, v)| (env_var_name(&k), v)))
            .unwrap();
    assert_eq!(flat, nested);
    assert_eq!(flat, toml);
    assert_eq!(flat, json);
    assert_eq!(flat, pairs);
    assert_eq!(flat, env);
    // ... and it is not the default configuration.
    assert_ne!(flat, StateConfig::default());
}

#[test]
fn every_option_is_read_into_its_setting() {
    let c = StateConfig::from_yaml_str(FULL_FLAT_YAML).unwrap();
    assert_eq!(c.backend_type(), BackendType::RocksDb);
    assert!(c.incremental());
    assert_eq!(c.checkpoint_dir(), Some("memory:///ckpt"));
    assert_eq!(c.savepoint_dir(), Some("file:///savepoints"));
    assert_eq!(c.num_retained(), 3);
    assert_eq!(c.recovery_path(), Some("/savepoints/savepoint-1-2"));
    assert!(c.ignore_unclaimed_state());
    assert!(c.changelog_enabled());
    assert_eq!(
        c.materialization_config(),
        &MaterializationConfig {
            interval: Some(Duration::from_secs(120)),
            max_failures_allowed: 5,
        }
    );
    assert_eq!(
        c.dstl_config(),
        &DstlConfig {
            preemptive_persist_threshold: 1 << 20,
            persist_delay: Duration::from_millis(20),
            persist_size_threshold: 2 << 20,
            upload_threads: 2,
            max_in_flight: 50 << 20,
            upload_timeout: Duration::from_secs(2),
            max_attempts: 4,
            retry_delay: Duration::from_millis(250),
        }
    );
    assert_eq!(
        c.rocksdb_local_dir(),
        Some(std::path::Path::new("/var/lib/state"))
    );
    assert_eq!(c.rocksdb_memory_bytes(), 64 << 20);
    assert_eq!(c.rocksdb_write_buffer_ratio(), 0.25);
    assert_eq!(c.rocksdb_predefined_options(), PredefinedOptions::Flash);
    assert_eq!(c.rocksdb_transfer_threads(), 2);
    assert!(!c.rocksdb_eager_upload());
    assert_eq!(c.rocksdb_compaction_style(), CompactionStyle::Universal);
    assert!(c.deprecated_keys().is_empty());
    let rocksdb = c.rocksdb_config().unwrap();
    assert_eq!(rocksdb.memory.managed_memory_bytes(), 64 << 20);
    assert_eq!(rocksdb.profile, PredefinedOptions::Flash);
    assert_eq!(rocksdb.transfer_threads, 2);
    assert!(!rocksdb.eager_upload);
    assert_eq!(rocksdb.compaction_style, CompactionStyle::Universal);
    assert!(rocksdb.incremental);
    assert_eq!(
        c.checkpoint_config(),
        &CheckpointConfig {
            interval: Some(Duration::from_secs(30)),
            min_pause: Duration::from_secs(5),
            max_concurrent: 2,
            timeout: Duration::from_secs(180),
            tolerable_failed: 4,
            mode: CheckpointingMode::AtLeastOnce,
            unaligned: true,
            aligned_checkpoint_timeout: Duration::from_secs(2),
        }
    );
}

#[test]
fn defaults_are_flinks_and_the_backends() {
    for empty in [
        StateConfig::default(),
        StateConfig::from_yaml_str("").unwrap(),
        StateConfig::from_yaml_str("# nothing\n").unwrap(),
        StateConfig::from_toml_str("").unwrap(),
        StateConfig::from_json_str("{}").unwrap(),
        StateConfig::from_env_vars([("HOME", "/root")]).unwrap(),
    ] {
        assert_eq!(empty, StateConfig::default());
    }
    let c = StateConfig::default();
    assert_eq!(c.backend_type(), BackendType::HashMap);
    assert!(!c.incremental());
    assert_eq!(c.checkpoint_dir(), None);
    assert_eq!(c.savepoint_dir(), None);
    assert_eq!(c.num_retained(), 1);
    assert_eq!(c.recovery_path(), None);
    assert!(!c.ignore_unclaimed_state());
    assert!(!c.changelog_enabled());
    assert_eq!(
        c.materialization_config(),
        &MaterializationConfig::default()
    );
    assert_eq!(c.dstl_config(), &DstlConfig::default());
    assert_eq!(c.rocksdb_local_dir(), None);
    assert_eq!(
        c.rocksdb_memory_bytes(),
        state_rocksdb::DEFAULT_MANAGED_MEMORY_BYTES
    );
    assert_eq!(
        c.rocksdb_write_buffer_ratio(),
        state_rocksdb::DEFAULT_WRITE_BUFFER_RATIO
    );
    assert_eq!(c.rocksdb_predefined_options(), PredefinedOptions::Default);
    assert_eq!(
        c.rocksdb_transfer_threads(),
        state_rocksdb::DEFAULT_TRANSFER_THREADS
    );
    assert!(c.rocksdb_eager_upload());
    assert_eq!(c.rocksdb_compaction_style(), CompactionStyle::Level);
    assert_eq!(c.checkpoint_config(), &CheckpointConfig::default());
}

#[test]
fn checkpointing_settings_are_checked_as_flink_checks_them() {
    let (key, message) = config_error(StateConfig::from_pairs([(
        "execution.checkpointing.interval",
        "5 ms",
    )]));
    assert_eq!(key, "execution.checkpointing.interval");
    assert!(message.contains("minimum"), "{message}");
    let (key, _) = config_error(StateConfig::from_pairs([(
        "execution.checkpointing.max-concurrent-checkpoints",
        "0",
    )]));
    assert_eq!(key, "execution.checkpointing.max-concurrent-checkpoints");
    let (key, message) = config_error(StateConfig::from_pairs([(
        "execution.checkpointing.mode",
        "twice",
    )]));
    assert_eq!(key, "execution.checkpointing.mode");
    assert!(message.contains("EXACTLY_ONCE"), "{message}");
    // Flink's older names still work, and are reported.
    let c = StateConfig::from_pairs([
        ("execution.checkpointing.unaligned", "true"),
        ("execution.checkpointing.alignment-timeout", "1 s"),
    ])
    .unwrap();
    assert!(c.checkpoint_config().unaligned);
    assert_eq!(
        c.checkpoint_config().aligned_checkpoint_timeout,
        Duration::from_secs(1)
    );
    assert_eq!(c.deprecated_keys().len(), 2);
}

#[test]
fn null_values_and_empty_maps_leave_options_unset() {
    let c = StateConfig::from_yaml_str(
        "execution.checkpointing.dir: ~\nstate: {}\nstate.backend.type: null\n",
    )
    .unwrap();
    assert_eq!(c, StateConfig::default());
    // A null beside the same key set elsewhere is still a duplicate.
    let err = StateConfig::from_yaml_str(
        "state.backend.type: ~\nstate:\n  backend:\n    type: rocksdb\n",
    )
    .unwrap_err();
    assert!(
        matches!(&err, StateError::Config { key, .. } if key == "state.backend.type"),
        "{err}"
    );
}

#[test]
fn deprecated_aliases_are_read_and_reported() {
    let c = StateConfig::from_yaml_str(
        "
state.backend: rocksdb
state.backend.incremental: true
state.checkpoints.dir: /ckpt
state.savepoints.dir: /sp
state.checkpoints.num-retained: 4
state.backend.changelog.enabled: true
execution.savepoint.path: /sp/savepoint-1
execution.savepoint.ignore-unclaimed-state: true
dstl.dfs.upload.num-threads: 7
",
    )
    .unwrap();
    assert_eq!(c.backend_type(), BackendType::RocksDb);
    assert!(c.incremental());
    assert_eq!(c.checkpoint_dir(), Some("/ckpt"));
    assert_eq!(c.savepoint_dir(), Some("/sp"));
    assert_eq!(c.num_retained(), 4);
    assert!(c.changelog_enabled());
    assert_eq!(c.recovery_path(), Some("/sp/savepoint-1"));
    assert!(c.ignore_unclaimed_state());
    assert_eq!(c.dstl_config().upload_threads, 7);
    let deprecated = c.deprecated_keys();
    assert_eq!(deprecated.len(), 9);
    assert!(deprecated.contains(&("state.backend", "state.backend.type")));
    assert!(deprecated.contains(&(
        "dstl.dfs.upload.num-threads",
        "state.changelog.dstl.dfs.upload.num-threads"
    )));
}

#[test]
fn a_key_and_its_alias_together_are_rejected() {
    let (key, message) = yaml_error("state.backend.type: rocksdb\nstate.backend: hashmap\n");
    assert_eq!(key, "state.backend.type");
    assert!(
        message.contains("deprecated alias 'state.backend'"),
        "{message}"
    );
    assert!(
        message.contains("keep only 'state.backend.type'"),
        "{message}"
    );

    // Even with the same value, and in nested form.
    let (key, message) =
        yaml_error("execution: {checkpointing: {dir: /a}}\nstate: {checkpoints: {dir: /a}}\n");
    assert_eq!(key, "execution.checkpointing.dir");
    assert!(message.contains("'state.checkpoints.dir'"), "{message}");
}

#[test]
fn a_key_set_flat_and_nested_is_rejected() {
    let (key, message) =
        yaml_error("state.backend.type: rocksdb\nstate:\n  backend:\n    type: hashmap\n");
    assert_eq!(key, "state.backend.type");
    assert!(message.contains("set twice"), "{message}");
    // JSON does not reject repeated keys itself.
    let (key, message) = config_error(StateConfig::from_json_str(
        r#"{"state.backend.type": "rocksdb", "state.backend.type": "rocksdb"}"#,
    ));
    assert_eq!(key, "state.backend.type");
    assert!(message.contains("set twice"), "{message}");
}

#[test]
fn unknown_keys_get_a_suggestion_or_the_nearby_keys() {
    let (key, message) = yaml_error("state.backend.typ: rocksdb");
    assert_eq!(key, "state.backend.typ");
    assert_eq!(message, "unknown key; did you mean 'state.backend.type'?");

    let (key, message) = yaml_error("execution:\n  checkpointing:\n    num-retain: 2\n");
    assert_eq!(key, "execution.checkpointing.num-retain");
    assert!(
        message.contains("did you mean 'execution.checkpointing.num-retained'"),
        "{message}"
    );

    // Case typos too.
    let (_, message) = yaml_error("state.backend.rocksdb.localDir: /x");
    assert!(
        message.contains("did you mean 'state.backend.rocksdb.localdir'"),
        "{message}"
    );

    // A typo of an alias names the current key.
    let (_, message) = yaml_error("state.checkpoint.dir: /x");
    assert!(
        message.contains(
            "'state.checkpoints.dir' (a deprecated alias of 'execution.checkpointing.dir')"
        ),
        "{message}"
    );

    // Nothing close: the keys under the longest known prefix.
    let (key, message) = yaml_error("state.backend.rocksdb.memory.managed: true");
    assert_eq!(key, "state.backend.rocksdb.memory.managed");
    assert!(
        message.contains("the keys under 'state.backend.rocksdb.memory.' are: state.backend.rocksdb.memory.fixed-per-tm, state.backend.rocksdb.memory.write-buffer-ratio"),
        "{message}"
    );

    // No shared prefix: every key.
    let (key, message) = yaml_error("parallelism.default: 4");
    assert_eq!(key, "parallelism.default");
    assert!(
        message.contains("the known keys are: state.backend.type,"),
        "{message}"
    );
    for option in OPTIONS {
        assert!(message.contains(option.key), "{message}");
    }

    // An unknown key with a null value is still unknown.
    let (key, _) = yaml_error("state.backend.tpye: ~");
    assert_eq!(key, "state.backend.tpye");
}

#[test]
fn invalid_values_name_the_key_and_the_accepted_values() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "state.backend.type: rocks",
            "state.backend.type",
            &["'rocks' is not one of hashmap, rocksdb"],
        ),
        (
            "state.backend.type: 1",
            "state.backend.type",
            &["the number 1 is not hashmap, rocksdb"],
        ),
        (
            "execution.checkpointing.incremental: yes please",
            "execution.checkpointing.incremental",
            &["'yes please' is not true, false"],
        ),
        (
            "execution.checkpointing.incremental: 1",
            "execution.checkpointing.incremental",
            &["the number 1 is not true, false"],
        ),
        (
            "execution.checkpointing.num-retained: 0",
            "execution.checkpointing.num-retained",
            &["the number 0 is not an integer ≥ 1"],
        ),
        (
            "execution.checkpointing.num-retained: 1.5",
            "execution.checkpointing.num-retained",
            &["the number 1.5 is not an integer ≥ 1"],
        ),
        (
            "execution.checkpointing.num-retained: -2",
            "execution.checkpointing.num-retained",
            &["the number -2 is not an integer ≥ 1"],
        ),
        (
            "execution.checkpointing.num-retained: three",
            "execution.checkpointing.num-retained",
            &["'three' is not an integer ≥ 1"],
        ),
        (
            "execution.checkpointing.num-retained: true",
            "execution.checkpointing.num-retained",
            &["the boolean true is not an integer ≥ 1"],
        ),
        (
            "execution.checkpointing.num-retained: [1, 2]",
            "execution.checkpointing.num-retained",
            &["a list is not an integer ≥ 1"],
        ),
        (
            "state.changelog.dstl.dfs.upload.num-threads: 5000",
            "state.changelog.dstl.dfs.upload.num-threads",
            &["the number 5000 is not an integer from 1 to 1024"],
        ),
        (
            "state.changelog.max-failures-allowed: -1",
            "state.changelog.max-failures-allowed",
            &["an integer from 0 to 4294967295"],
        ),
        (
            "state.changelog.periodic-materialize.interval: 10 parsecs",
            "state.changelog.periodic-materialize.interval",
            &[
                "'10 parsecs' is not a duration above zero",
                "10 min",
                "a plain number is ms",
            ],
        ),
        (
            "state.changelog.periodic-materialize.interval: 0 s",
            "state.changelog.periodic-materialize.interval",
            &["'0 s' is not a duration above zero"],
        ),
        (
            "state.changelog.dstl.dfs.upload.timeout: 1.5s",
            "state.changelog.dstl.dfs.upload.timeout",
            &["'1.5s' is not a duration above zero"],
        ),
        (
            "state.changelog.dstl.dfs.upload.max-in-flight: lots",
            "state.changelog.dstl.dfs.upload.max-in-flight",
            &[
                "'lots' is not a memory size above zero",
                "64 mb",
                "a plain number is bytes",
            ],
        ),
        (
            "state.changelog.dstl.dfs.upload.max-in-flight: 0",
            "state.changelog.dstl.dfs.upload.max-in-flight",
            &["the number 0 is not a memory size above zero"],
        ),
        (
            "state.backend.rocksdb.memory.fixed-per-tm: 512kb",
            "state.backend.rocksdb.memory.fixed-per-tm",
            &["'512kb' is not a memory size of at least 1 mb"],
        ),
        (
            "state.backend.rocksdb.memory.write-buffer-ratio: 1.5",
            "state.backend.rocksdb.memory.write-buffer-ratio",
            &["the number 1.5 is not a number strictly between 0 and 1"],
        ),
        (
            "state.backend.rocksdb.memory.write-buffer-ratio: half",
            "state.backend.rocksdb.memory.write-buffer-ratio",
            &["'half' is not a number strictly between 0 and 1"],
        ),
        (
            "state.backend.rocksdb.predefined-options: SPINNING_DISK_OPTIMIZED_HIGH_MEM",
            "state.backend.rocksdb.predefined-options",
            &["is not one of DEFAULT, SPINNING_DISK_OPTIMIZED, FLASH_SSD_OPTIMIZED"],
        ),
        (
            "execution.checkpointing.dir: ftp://host/ckpt",
            "execution.checkpointing.dir",
            &[
                "unsupported scheme 'ftp'",
                "s3://bucket/prefix (feature s3)",
                "memory://",
            ],
        ),
        (
            "execution.checkpointing.savepoint-dir: ''",
            "execution.checkpointing.savepoint-dir",
            &["the empty string is not a local path, or a URL"],
        ),
        (
            "execution.state-recovery.path: 42",
            "execution.state-recovery.path",
            &["the number 42 is not a local path, or a URL"],
        ),
        (
            "state.backend.rocksdb.localdir: s3://bucket/x",
            "state.backend.rocksdb.localdir",
            &["'s3://bucket/x' is not a local directory path"],
        ),
        (
            "state.backend.type: {kind: rocksdb}",
            "state.backend.type",
            &["expected hashmap, rocksdb, got a map (found 'state.backend.type.kind' = 'rocksdb')"],
        ),
    ];
    for (yaml, want_key, fragments) in cases {
        let (key, message) = yaml_error(yaml);
        assert_eq!(&key, want_key, "{yaml}: {message}");
        for fragment in *fragments {
            assert!(message.contains(fragment), "{yaml}: {message}");
        }
    }
}

#[test]
fn a_wrong_value_under_an_alias_names_the_alias() {
    let (key, message) = yaml_error("state.backend: rocks");
    assert_eq!(key, "state.backend");
    assert_eq!(message, "'rocks' is not one of hashmap, rocksdb");
}

#[test]
fn every_problem_is_reported_first_one_named() {
    let (key, message) = yaml_error(
        "state.backend.type: rocks\nexecution.checkpointing.num-retained: 0\nbogus.key: 1\n",
    );
    assert_eq!(key, "state.backend.type");
    assert!(
        message.starts_with("'rocks' is not one of hashmap, rocksdb (and 2 more: "),
        "{message}"
    );
    assert!(
        message.contains("'execution.checkpointing.num-retained'"),
        "{message}"
    );
    assert!(message.contains("'bogus.key'"), "{message}");
}

#[test]
fn enum_values_are_case_insensitive_and_strings_convert() {
    let c = StateConfig::from_yaml_str(
        "state.backend.type: RocksDB\nexecution.checkpointing.incremental: 'TRUE'\nexecution.checkpointing.num-retained: '2'\nstate.backend.rocksdb.memory.write-buffer-ratio: '0.4'\n",
    )
    .unwrap();
    assert_eq!(c.backend_type(), BackendType::RocksDb);
    assert!(c.incremental());
    assert_eq!(c.num_retained(), 2);
    assert_eq!(c.rocksdb_write_buffer_ratio(), 0.4);
}

#[test]
fn disabling_periodic_materialization_clears_the_interval() {
    let c =
        StateConfig::from_yaml_str("state.changelog.periodic-materialize.enabled: false").unwrap();
    assert_eq!(c.materialization_config().interval, None);
}

#[test]
fn syntax_errors_and_bad_documents_are_config_errors() {
    let (key, message) = yaml_error("state.backend.type: [unclosed");
    assert_eq!(key, "YAML");
    assert!(message.starts_with("not valid YAML"), "{message}");
    let (key, message) = config_error(StateConfig::from_toml_str("state = "));
    assert_eq!(key, "TOML");
    assert!(message.starts_with("not valid TOML"), "{message}");
    // Parsers draw the line and a caret; the message stays one line.
    let (_, message) = config_error(StateConfig::from_toml_str("[state]\nbackend.type = = 1\n"));
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains("line 2"), "{message}");
    let (_, message) = yaml_error("a: 1\n  b: [");
    assert_eq!(message.lines().count(), 1, "{message}");
    let (key, message) = config_error(StateConfig::from_json_str("{"));
    assert_eq!(key, "JSON");
    assert!(message.starts_with("not valid JSON"), "{message}");
    let (key, message) = config_error(StateConfig::from_json_str("[1]"));
    assert_eq!(key, "JSON");
    assert!(
        message.contains("must be a map of keys to values, not a list"),
        "{message}"
    );
    let (key, message) = yaml_error("just a string");
    assert_eq!(key, "YAML");
    assert!(message.contains("not 'just a string'"), "{message}");
}

#[test]
fn files_are_read_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let yaml = StateConfig::from_file(write("a.yaml", FULL_FLAT_YAML)).unwrap();
    let yml = StateConfig::from_file(write("a.YML", FULL_NESTED_YAML)).unwrap();
    let toml = StateConfig::from_file(write("a.toml", FULL_TOML)).unwrap();
    let json = StateConfig::from_file(write("a.json", FULL_JSON)).unwrap();
    assert_eq!(yaml, yml);
    assert_eq!(yaml, toml);
    assert_eq!(yaml, json);

    let ini = write("a.ini", "state.backend.type = rocksdb");
    let (key, message) = config_error(StateConfig::from_file(&ini));
    assert_eq!(key, ini.display().to_string());
    assert_eq!(
        message,
        "unsupported configuration file extension '.ini': use .toml, .yaml, .yml or .json"
    );
    let (_, message) = config_error(StateConfig::from_file(dir.path().join("config")));
    assert!(message.contains("extension (none)"), "{message}");

    let missing = dir.path().join("missing.yaml");
    let (key, message) = config_error(StateConfig::from_file(&missing));
    assert_eq!(key, missing.display().to_string());
    assert!(
        message.starts_with("cannot read the configuration file"),
        "{message}"
    );

    // Syntax errors name the file; value errors name the key.
    let broken = write("broken.json", "{");
    let (key, message) = config_error(StateConfig::from_file(&broken));
    assert_eq!(key, broken.display().to_string());
    assert!(message.starts_with("not valid JSON"), "{message}");
    let (key, _) = config_error(StateConfig::from_file(write(
        "bad.toml",
        "\"state.backend.type\" = \"x\"",
    )));
    assert_eq!(key, "state.backend.type");
}

#[test]
fn environment_variables_map_to_keys() {
    let c = StateConfig::from_env_vars([
        ("KSTATE_STATE_BACKEND_TYPE", "rocksdb"),
        (
            "KSTATE_STATE_BACKEND_ROCKSDB_MEMORY_FIXED__PER__TM",
            "512mb",
        ),
        (
            "KSTATE_STATE_CHANGELOG_DSTL_DFS_UPLOAD_NEXT__ATTEMPT__DELAY",
            "1 s",
        ),
        (
            "KSTATE_EXECUTION_STATE__RECOVERY_IGNORE__UNCLAIMED__STATE",
            "true",
        ),
        ("KSTATE_EXECUTION_CHECKPOINTING_SAVEPOINT__DIR", ""),
        ("HOME", "/root"),
        (
            "kstate_state_backend_type",
            "ignored: the prefix is upper case",
        ),
    ])
    .unwrap();
    assert_eq!(c.backend_type(), BackendType::RocksDb);
    assert_eq!(c.rocksdb_memory_bytes(), 512 << 20);
    assert_eq!(c.dstl_config().retry_delay, Duration::from_secs(1));
    assert!(c.ignore_unclaimed_state());
    assert_eq!(c.savepoint_dir(), None);
    for option in OPTIONS {
        let name = option.env_var();
        assert!(name.starts_with("KSTATE_"), "{name}");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
            "{name}"
        );
    }
}

#[test]
fn environment_errors_name_the_variable_or_key() {
    let (key, message) = config_error(StateConfig::from_env_vars([(
        "KSTATE_STATE_BACKEND_TYP",
        "rocksdb",
    )]));
    assert_eq!(key, "KSTATE_STATE_BACKEND_TYP");
    assert!(
        message.contains("did you mean KSTATE_STATE_BACKEND_TYPE (for 'state.backend.type')?"),
        "{message}"
    );
    // The deprecated aliases have no variables.
    let (key, _) = config_error(StateConfig::from_env_vars([(
        "KSTATE_STATE_BACKEND",
        "rocksdb",
    )]));
    assert_eq!(key, "KSTATE_STATE_BACKEND");
    let (key, message) = config_error(StateConfig::from_env_vars([("KSTATE_", "x")]));
    assert_eq!(key, "KSTATE_");
    assert!(
        message.contains("unknown environment variable"),
        "{message}"
    );

    let (key, message) = config_error(StateConfig::from_env_vars([(
        "KSTATE_EXECUTION_CHECKPOINTING_NUM__RETAINED",
        "none",
    )]));
    assert_eq!(key, "execution.checkpointing.num-retained");
    assert!(
        message.contains("'none' is not an integer ≥ 1"),
        "{message}"
    );
    assert!(
        message
            .contains("from the environment variable KSTATE_EXECUTION_CHECKPOINTING_NUM__RETAINED"),
        "{message}"
    );
}

#[test]
fn overrides_and_environment_layers_replace_options() {
    let base = StateConfig::from_yaml_str(
        "state.backend: rocksdb\nstate.checkpoints.dir: /ckpt\nexecution.checkpointing.num-retained: 2\n",
    )
    .unwrap();
    let c = base
        .with_overrides([
            ("execution.checkpointing.dir", "memory://"),
            ("state.backend.type", "hashmap"),
        ])
        .unwrap();
    assert_eq!(c.checkpoint_dir(), Some("memory://"));
    assert_eq!(c.backend_type(), BackendType::HashMap);
    assert_eq!(c.num_retained(), 2);
    assert!(c.deprecated_keys().is_empty());

    let c = base
        .with_env_vars([("KSTATE_EXECUTION_CHECKPOINTING_NUM__RETAINED", "5")])
        .unwrap();
    assert_eq!(c.num_retained(), 5);
    assert_eq!(c.backend_type(), BackendType::RocksDb);

    let (key, _) = config_error(base.with_overrides([("state.backend.type", "rocks")]));
    assert_eq!(key, "state.backend.type");
    let (key, _) = config_error(base.with_overrides([("no.such.key", "1")]));
    assert_eq!(key, "no.such.key");
}

#[test]
fn embeds_in_an_application_configuration() {
    #[derive(serde::Deserialize)]
    struct App {
        #[allow(dead_code)]
        name: String,
        state: StateConfig,
    }
    let yaml = format!(
        "name: clicks\nstate:\n{}",
        FULL_NESTED_YAML
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
    );
    let app: App = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(
        app.state,
        StateConfig::from_yaml_str(FULL_FLAT_YAML).unwrap()
    );
    let toml = "name = \"clicks\"\n[state]\n\"state.backend.type\" = \"rocks\"\n";
    let err = toml::from_str::<App>(toml).err().unwrap();
    assert!(
        err.to_string().contains(
            "invalid configuration 'state.backend.type': 'rocks' is not one of hashmap, rocksdb"
        ),
        "{err}"
    );
}

#[test]
fn checkpoint_storage_needs_a_directory() {
    let (key, message) = match StateConfig::default().checkpoint_storage("job") {
        Err(StateError::Config { key, message }) => (key, message),
        other => panic!("{other:?}"),
    };
    assert_eq!(key, "execution.checkpointing.dir");
    assert!(message.starts_with("not set"), "{message}");

    let dir = tempfile::tempdir().unwrap();
    let c = StateConfig::from_pairs([
        ("execution.checkpointing.dir", dir.path().to_str().unwrap()),
        ("execution.checkpointing.num-retained", "2"),
    ])
    .unwrap();
    let storage = Arc::new(c.checkpoint_storage("job-7").unwrap());
    assert!(
        storage.location().ends_with("job-7"),
        "{}",
        storage.location()
    );
    assert_eq!(c.checkpoint_store(storage).unwrap().num_retained(), 2);
}

/// Writes state through a backend of `config`'s factory, checkpoints it,
/// restores the checkpoint into a new backend of the same factory and
/// reads the state back.
fn round_trip(config: &StateConfig, expected_name: &str) {
    let factory = config.backend_factory().unwrap();
    assert_eq!(factory.name(), expected_name);
    let storage: Arc<dyn CheckpointStorageAccess> =
        Arc::new(config.checkpoint_storage("round-trip").unwrap());
    let context = BackendContext {
        operator: "op-0".into(),
        max_parallelism: 128,
        key_group_range: KeyGroupRange::all(128).unwrap(),
        restore: Vec::new(),
        storage: Arc::clone(&storage),
        restore_storage: None,
        skip_restored_states: Vec::new(),
    };
    let count_descriptor = || ValueStateDescriptor::<u64>::new("count");
    let seen_descriptor = || ListStateDescriptor::<String>::new("seen");
    let mut backend = factory.create(context.clone()).unwrap();
    let count = backend.value_state(count_descriptor()).unwrap();
    let seen = backend.list_state(seen_descriptor()).unwrap();
    for i in 0..200u64 {
        backend.set_key(&i).unwrap();
        count.update(&mut *backend, &(i * 3)).unwrap();
        seen.add(&mut *backend, &format!("event-{i}")).unwrap();
    }
    let task = backend
        .snapshot(1, &SnapshotOptions::checkpoint(0), Arc::clone(&storage))
        .unwrap();
    let handle = std::thread::spawn(move || task.run())
        .join()
        .unwrap()
        .unwrap()
        .handle;
    backend.notify_checkpoint_complete(1).unwrap();
    // Changes after the checkpoint are not in it.
    backend.set_key(&0u64).unwrap();
    count.update(&mut *backend, &999).unwrap();
    drop(backend);

    let mut restored = factory
        .create(BackendContext {
            restore: vec![handle],
            ..context
        })
        .unwrap();
    let count = restored.value_state(count_descriptor()).unwrap();
    let seen = restored.list_state(seen_descriptor()).unwrap();
    for i in 0..200u64 {
        restored.set_key(&i).unwrap();
        assert_eq!(count.value(&mut *restored).unwrap(), Some(i * 3));
        assert_eq!(
            seen.get(&mut *restored).unwrap(),
            vec![format!("event-{i}")]
        );
    }
}

#[test]
fn every_backend_round_trips_through_the_built_factory() {
    let local = tempfile::tempdir().unwrap();
    let localdir = local.path().to_str().unwrap();
    let cases = [
        ("state.backend.type: hashmap", "heap"),
        ("state.backend.type: rocksdb", "rocksdb"),
        (
            "state.backend.type: rocksdb\nexecution.checkpointing.incremental: true",
            "rocksdb",
        ),
        ("state.changelog.enabled: true", "changelog-heap"),
        (
            "state.backend.type: rocksdb\nstate.changelog.enabled: true\nexecution.checkpointing.incremental: true",
            "changelog-rocksdb",
        ),
    ];
    for (yaml, name) in cases {
        let config = StateConfig::from_yaml_str(yaml)
            .unwrap()
            .with_overrides([
                ("execution.checkpointing.dir", "memory://"),
                ("state.backend.rocksdb.localdir", localdir),
                ("state.backend.rocksdb.memory.fixed-per-tm", "32 mb"),
            ])
            .unwrap();
        round_trip(&config, name);
    }
    // Every RocksDB instance removed its working directory.
    assert_eq!(std::fs::read_dir(local.path()).unwrap().count(), 0);
}
