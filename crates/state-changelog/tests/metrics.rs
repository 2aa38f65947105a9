//! The changelog backend reports Flink's materialization and DSTL metrics
//! through the `metrics` facade.

// Test code: a failed unwrap is a failed test (clippy exempts only #[test] fns).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use state_api::conformance::StandardStates;
use state_api::{
    CheckpointStorageAccess, KeyGroupRange, KeyedStateBackend, KeyedStateBackendExt,
    KeyedStateHandle,
};
use state_storage::ObjectStoreCheckpointStorage;

use common::{changelog_heap, context, manual_materialization, snapshot, test_dstl};

fn gauge(values: &HashMap<String, DebugValue>, name: &str) -> f64 {
    match &values[name] {
        DebugValue::Gauge(value) => value.into_inner(),
        other => panic!("{name} is not a gauge: {other:?}"),
    }
}

fn counter(values: &HashMap<String, DebugValue>, name: &str) -> u64 {
    match &values[name] {
        DebugValue::Counter(value) => *value,
        other => panic!("{name} is not a counter: {other:?}"),
    }
}

#[test]
fn materializations_checkpoints_and_uploads_are_measured() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (log_size, materialized_size) = metrics::with_local_recorder(&recorder, || {
        let storage: Arc<dyn CheckpointStorageAccess> =
            Arc::new(ObjectStoreCheckpointStorage::in_memory("metrics-test").unwrap());
        let factory = changelog_heap(test_dstl(), manual_materialization());
        let range = KeyGroupRange::all(128).unwrap();
        let mut backend = factory
            .create_changelog(context(Arc::clone(&storage), range, Vec::new()))
            .unwrap();
        let mut states = StandardStates::register(&mut backend);
        for key in 0..500 {
            states.populate(&mut backend, key);
        }
        // The first checkpoint materializes; the second carries only log.
        snapshot(&mut backend, &storage, 1).unwrap();
        backend.notify_checkpoint_complete(1).unwrap();
        for key in 0..50u64 {
            backend.set_key(&key).unwrap();
            states.value.update(&mut backend, &(key + 1)).unwrap();
        }
        let second = snapshot(&mut backend, &storage, 2).unwrap();
        backend.notify_checkpoint_complete(2).unwrap();
        let KeyedStateHandle::Changelog(handle) = &second.handle else {
            panic!("not a changelog handle");
        };
        let materialized_size: u64 = handle.materialized.iter().map(|h| h.state_size()).sum();
        (handle.log_size(), materialized_size)
    });
    assert!(log_size > 0);

    let mut values = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<_> = key.key().labels().collect();
        if labels.is_empty() {
            values.insert(key.key().name().to_string(), value);
        } else {
            assert!(
                labels
                    .iter()
                    .any(|l| l.key() == "operator" && l.value() == "test-0"),
                "{key:?}"
            );
            assert!(
                labels
                    .iter()
                    .any(|l| l.key() == "key_groups" && l.value() == "0..128"),
                "{key:?}"
            );
            values.insert(key.key().name().to_string(), value);
        }
    }
    assert_eq!(counter(&values, "startedMaterialization"), 1);
    assert_eq!(counter(&values, "completedMaterialization"), 1);
    assert_eq!(counter(&values, "failedMaterialization"), 0);
    assert_eq!(
        gauge(&values, "lastFullSizeOfMaterialization"),
        materialized_size as f64
    );
    assert!(gauge(&values, "lastIncSizeOfMaterialization") > 0.0);
    // The materialization lag: the log a restore of checkpoint 2 replays,
    // all of it new since checkpoint 1.
    assert_eq!(
        gauge(&values, "lastFullSizeOfNonMaterialization"),
        log_size as f64
    );
    assert_eq!(
        gauge(&values, "lastIncSizeOfNonMaterialization"),
        log_size as f64
    );
    assert!(counter(&values, "numberOfUploadRequests") >= 1);
    assert_eq!(counter(&values, "numberOfUploadFailures"), 0);
    match &values["uploadSizes"] {
        DebugValue::Histogram(sizes) => assert!(!sizes.is_empty()),
        other => panic!("uploadSizes is not a histogram: {other:?}"),
    }
}
