//! `statectl` against a savepoint in a real S3-compatible store.
//!
//! Needs a server (`scripts/s3-server.sh start`, `eval "$(scripts/s3-server.sh
//! env)"`, as the state-storage S3 tests); without `STATE_S3_ENDPOINT` the
//! test prints a SKIPPED line and returns. statectl reads the store's
//! settings from the environment (`AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, the
//! credentials), as users run it.
#![cfg(feature = "s3")]
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};
use std::sync::Arc;

use state_api::snapshot::SavepointFormat;
use state_api::{
    BackendContext, CheckpointStorageAccess, KeyGroupRange, KeyedStateBackendExt, SnapshotOptions,
    SnapshotType, StateBackendFactory, ValueStateDescriptor,
};
use state_storage::{
    CheckpointKind, CompletedCheckpoint, ObjectStoreCheckpointStorage, SavepointWriter,
};

fn statectl(endpoint: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_statectl"))
        .args(args)
        .env("AWS_ENDPOINT", endpoint)
        .env(
            "AWS_ALLOW_HTTP",
            endpoint.starts_with("http://").to_string(),
        )
        .output()
        .unwrap()
}

#[test]
fn statectl_reads_verifies_and_disposes_a_savepoint_in_s3() {
    let Ok(endpoint) = std::env::var("STATE_S3_ENDPOINT") else {
        eprintln!("SKIPPED: S3 tests need STATE_S3_ENDPOINT (run scripts/s3-server.sh start)");
        return;
    };
    let bucket = std::env::var("STATE_S3_BUCKET").unwrap_or_else(|_| "state-checkpoints".into());
    let savepoints = format!("s3://{bucket}/statectl-{}", uuid::Uuid::new_v4());
    let allow_http = endpoint.starts_with("http://").to_string();
    let options = [
        ("endpoint", endpoint.as_str()),
        ("allow_http", allow_http.as_str()),
    ];

    let scratch = Arc::new(ObjectStoreCheckpointStorage::in_memory("job").unwrap());
    let mut backend = state_heap::HeapBackendFactory::new()
        .create(BackendContext {
            operator: "op".into(),
            max_parallelism: 128,
            key_group_range: KeyGroupRange::all(128).unwrap(),
            restore: Vec::new(),
            storage: scratch as Arc<dyn CheckpointStorageAccess>,
            restore_storage: None,
            skip_restored_states: Vec::new(),
        })
        .unwrap();
    let count = backend
        .value_state(ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    for key in 0..20u64 {
        backend.set_key(&key).unwrap();
        count.update(&mut *backend, &(key + 100)).unwrap();
    }
    let writer = SavepointWriter::in_storage(
        ObjectStoreCheckpointStorage::from_url(&savepoints, "savepoint-s3-test", options).unwrap(),
    );
    let options = SnapshotOptions {
        snapshot_type: SnapshotType::Savepoint(SavepointFormat::Canonical),
        timestamp_ms: 0,
    };
    let handle = backend
        .snapshot(4, &options, writer.storage())
        .unwrap()
        .run()
        .unwrap()
        .handle;
    writer
        .commit(
            CompletedCheckpoint::new("job", 4, 0, CheckpointKind::Savepoint)
                .with_operator("op", vec![handle]),
        )
        .unwrap();
    let location = format!("{savepoints}/savepoint-s3-test");

    let listed = statectl(&endpoint, &["list", &savepoints]);
    let text = String::from_utf8(listed.stdout).unwrap();
    assert!(
        text.contains("savepoint-s3-test"),
        "{text}{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let verified = statectl(&endpoint, &["verify", &location]);
    assert_eq!(
        verified.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    let dumped = statectl(
        &endpoint,
        &["dump", &location, "--state", "count", "--key-type", "u64"],
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(dumped.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 20);
    assert!(
        lines
            .iter()
            .all(|l| l["value"].as_u64().unwrap() == l["key"].as_u64().unwrap() + 100)
    );
    let disposed = statectl(&endpoint, &["dispose", &format!("{location}/_metadata")]);
    assert!(
        disposed.status.success(),
        "{}",
        String::from_utf8_lossy(&disposed.stderr)
    );
    let gone = statectl(&endpoint, &["verify", &location]);
    assert_eq!(gone.status.code(), Some(3));
}
