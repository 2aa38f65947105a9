//! The coordinator against an in-memory (or fault-injecting) store and a
//! gateway that records what tasks were told.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parking_lot::Mutex;
use state_api::snapshot::{KeyGroupsStateHandle, SavepointFormat};
use state_api::{
    CheckpointStorageAccess, KeyGroupRange, KeyedStateHandle, SnapshotType, StateScope,
};
use state_storage::fault::{Fault, FaultConfig, FaultInjectingStore, Operation};
use state_storage::retry::RetryPolicy;
use state_storage::{CompletedCheckpointStore, ObjectStoreCheckpointStorage};

use super::*;

const FAST: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    initial_backoff: Duration::from_millis(1),
    max_backoff: Duration::from_millis(2),
};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    Trigger(TaskId, u64),
    Notify(TaskId, Notification),
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Call>>>);

impl Recorder {
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut self.0.lock())
    }
}

impl TaskGateway for Recorder {
    fn trigger(&mut self, task: &TaskId, barrier: CheckpointBarrier) {
        self.0.lock().push(Call::Trigger(task.clone(), barrier.id));
    }

    fn notify(&mut self, task: &TaskId, notification: Notification) {
        self.0.lock().push(Call::Notify(task.clone(), notification));
    }
}

fn source() -> TaskId {
    TaskId::new("source", 0)
}

fn sink() -> TaskId {
    TaskId::new("sink", 0)
}

struct Fixture {
    coordinator: CheckpointCoordinator,
    calls: Recorder,
    storage: Arc<ObjectStoreCheckpointStorage>,
    faults: Arc<FaultInjectingStore>,
}

fn fixture(config: CheckpointConfig, num_retained: usize) -> Fixture {
    let faults = Arc::new(FaultInjectingStore::new(
        Arc::new(InMemory::new()),
        FaultConfig::default(),
    ));
    let storage = Arc::new(
        ObjectStoreCheckpointStorage::new(
            Arc::clone(&faults) as Arc<dyn ObjectStore>,
            Path::default(),
            "job",
        )
        .unwrap()
        .with_retry(FAST),
    );
    let store = CompletedCheckpointStore::open(Arc::clone(&storage), num_retained).unwrap();
    let calls = Recorder::default();
    let coordinator = CheckpointCoordinator::new(
        config,
        "job",
        [source(), sink()],
        [source()],
        store,
        Box::new(calls.clone()),
    )
    .unwrap();
    Fixture {
        coordinator,
        calls,
        storage,
        faults,
    }
}

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

/// A snapshot of one exclusive file written for checkpoint `id`.
fn snapshot(storage: &ObjectStoreCheckpointStorage, id: u64, bytes: &[u8]) -> TaskSnapshot {
    let mut out = storage
        .create_output(id, StateScope::Exclusive, "state")
        .unwrap();
    out.write_all(bytes).unwrap();
    let file = out.close().unwrap();
    TaskSnapshot::default().with_keyed(
        "counter",
        [KeyedStateHandle::KeyGroups(KeyGroupsStateHandle {
            backend: "test".into(),
            checkpoint_id: id,
            max_parallelism: 1,
            key_group_range: KeyGroupRange::new(0, 0).unwrap(),
            file,
            key_group_offsets: vec![0],
        })],
    )
}

fn ack_all(f: &mut Fixture, id: u64, now: Duration) -> Vec<CheckpointEvent> {
    let mut events = f.coordinator.acknowledge(
        &source(),
        id,
        TaskSnapshot::default(),
        TaskCheckpointMetrics::default(),
        now,
    );
    let state = snapshot(&f.storage, id, &id.to_le_bytes());
    events.extend(f.coordinator.acknowledge(
        &sink(),
        id,
        state,
        TaskCheckpointMetrics::default(),
        now,
    ));
    events
}

fn triggered(events: &[CheckpointEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            CheckpointEvent::Triggered { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

fn notices(calls: &[Call], task: &TaskId) -> Vec<Notification> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Notify(t, n) if t == task => Some(*n),
            _ => None,
        })
        .collect()
}

#[test]
fn periodic_triggers_follow_the_plan_and_wait_for_the_pending_one() {
    let mut f = fixture(CheckpointConfig::every(ms(1_000)), 3);
    f.coordinator.start(ms(0), ms(1_000));
    assert_eq!(f.coordinator.next_wakeup(), Some(ms(1_000)));
    assert!(f.coordinator.tick(ms(999)).is_empty());
    assert_eq!(triggered(&f.coordinator.tick(ms(1_000))), vec![1]);
    assert_eq!(f.calls.take(), vec![Call::Trigger(source(), 1)]);
    // One may be pending: the slot at 2,000 waits, and is not fired twice.
    assert!(triggered(&f.coordinator.tick(ms(2_000))).is_empty());
    // Waiting for the pending one, the only wake-up is its timeout.
    assert_eq!(
        f.coordinator.next_wakeup(),
        Some(ms(1_000) + f.coordinator.config().timeout)
    );
    let events = ack_all(&mut f, 1, ms(2_500));
    assert!(
        matches!(&events[..], [CheckpointEvent::Completed(c)] if c.id == 1 && c.duration == ms(1_500))
    );
    // The missed slot fires at the next tick; the plan then goes on from 3,000.
    assert_eq!(triggered(&f.coordinator.tick(ms(2_600))), vec![2]);
    ack_all(&mut f, 2, ms(2_700));
    assert!(f.coordinator.tick(ms(2_999)).is_empty());
    assert_eq!(triggered(&f.coordinator.tick(ms(3_000))), vec![3]);
}

#[test]
fn min_pause_counts_from_the_last_completion() {
    let config = CheckpointConfig {
        min_pause: ms(800),
        ..CheckpointConfig::every(ms(1_000))
    };
    let mut f = fixture(config, 3);
    f.coordinator.start(ms(0), ms(1_000));
    f.coordinator.tick(ms(1_000));
    ack_all(&mut f, 1, ms(1_900));
    assert!(triggered(&f.coordinator.tick(ms(2_000))).is_empty());
    assert_eq!(f.coordinator.next_wakeup(), Some(ms(2_700)));
    assert_eq!(triggered(&f.coordinator.tick(ms(2_700))), vec![2]);
}

#[test]
fn completion_commits_and_tells_every_task_then_subsumes() {
    let mut f = fixture(CheckpointConfig::default(), 1);
    for id in 1..=2 {
        let events = f
            .coordinator
            .trigger(ms(id * 100), SnapshotType::Checkpoint, false);
        assert_eq!(triggered(&events), vec![id]);
        // Not complete until every task acknowledged.
        let partial = f.coordinator.acknowledge(
            &source(),
            id,
            TaskSnapshot::default(),
            TaskCheckpointMetrics::default(),
            ms(id * 100 + 10),
        );
        assert!(partial.is_empty());
        let state = snapshot(&f.storage, id, b"state");
        let events = f.coordinator.acknowledge(
            &sink(),
            id,
            state,
            TaskCheckpointMetrics::default(),
            ms(id * 100 + 20),
        );
        let [CheckpointEvent::Completed(completed)] = &events[..] else {
            panic!("expected completion, got {events:?}");
        };
        assert_eq!(completed.full_size, 5);
        assert_eq!(completed.persisted_size, 5);
    }
    let calls = f.calls.take();
    let expected = vec![
        Notification::Complete(1),
        Notification::Complete(2),
        Notification::Subsumed(1),
    ];
    assert_eq!(notices(&calls, &source()), expected);
    assert_eq!(notices(&calls, &sink()), expected);
    let store = f.coordinator.store();
    assert_eq!(
        store
            .checkpoints()
            .map(|c| c.checkpoint_id)
            .collect::<Vec<_>>(),
        vec![2]
    );
    assert_eq!(store.latest().unwrap().operators["counter"].len(), 1);
    assert!(store.unreferenced_files().unwrap().is_empty());
    assert_eq!(f.coordinator.stats().completed, 2);
}

#[test]
fn a_decline_aborts_discards_and_counts() {
    let config = CheckpointConfig {
        tolerable_failed: 1,
        ..CheckpointConfig::default()
    };
    let mut f = fixture(config, 1);
    f.coordinator
        .trigger(ms(0), SnapshotType::Checkpoint, false);
    // The sink wrote its state, the source failed its snapshot.
    let state = snapshot(&f.storage, 1, b"orphan");
    f.coordinator
        .acknowledge(&sink(), 1, state, TaskCheckpointMetrics::default(), ms(5));
    let reason = FailureReason::Declined {
        task: source().to_string(),
        message: "disk full".into(),
    };
    let events = f.coordinator.decline(1, reason.clone(), ms(10));
    assert_eq!(events, vec![CheckpointEvent::Aborted { id: 1, reason }]);
    let calls = f.calls.take();
    assert_eq!(notices(&calls, &source()), vec![Notification::Aborted(1)]);
    assert_eq!(notices(&calls, &sink()), vec![Notification::Aborted(1)]);
    // Its directory is gone.
    assert!(f.storage.list_files(None).unwrap().is_empty());

    // A late acknowledgement of the aborted checkpoint, whose file was
    // written after the directory was discarded: the file goes, and the
    // task is told so its backends drop their shared files.
    let late = snapshot(&f.storage, 1, b"written after the abort");
    assert_eq!(f.storage.list_files(None).unwrap().len(), 1);
    f.coordinator
        .acknowledge(&source(), 1, late, TaskCheckpointMetrics::default(), ms(20));
    assert_eq!(
        f.calls.take(),
        vec![Call::Notify(source(), Notification::Aborted(1))]
    );
    assert!(f.storage.list_files(None).unwrap().is_empty());

    // The second counted failure in a row exceeds the tolerance of one.
    f.coordinator
        .trigger(ms(30), SnapshotType::Checkpoint, false);
    let events = f.coordinator.tick(ms(30) + f.coordinator.config().timeout);
    assert_eq!(
        events,
        vec![
            CheckpointEvent::Aborted {
                id: 2,
                reason: FailureReason::Expired
            },
            CheckpointEvent::TolerableFailuresExceeded { id: 2, failures: 2 }
        ]
    );
}

#[test]
fn a_completion_resets_the_failure_count_and_uncounted_reasons_do_not_count() {
    let mut f = fixture(CheckpointConfig::default(), 1);
    f.coordinator
        .trigger(ms(0), SnapshotType::Checkpoint, false);
    let events = f.coordinator.task_failed(ms(1));
    assert_eq!(events.len(), 1, "{events:?}");
    f.coordinator
        .trigger(ms(2), SnapshotType::Checkpoint, false);
    let events = f
        .coordinator
        .decline(2, FailureReason::DeclinedSubsumed, ms(3));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(f.coordinator.stats().failed, 2);
}

#[test]
fn a_repeated_acknowledgement_of_a_completed_checkpoint_is_ignored() {
    let mut f = fixture(CheckpointConfig::default(), 1);
    f.coordinator
        .trigger(ms(0), SnapshotType::Checkpoint, false);
    ack_all(&mut f, 1, ms(1));
    f.calls.take();
    let events = f.coordinator.acknowledge(
        &sink(),
        1,
        TaskSnapshot::default(),
        TaskCheckpointMetrics::default(),
        ms(2),
    );
    assert!(events.is_empty());
    assert!(f.calls.take().is_empty());
}

#[test]
fn an_unclear_commit_is_resolved_by_reading_back_before_anything_else() {
    let mut f = fixture(CheckpointConfig::every(ms(100)), 1);
    f.coordinator.start(ms(0), ms(100));
    f.coordinator.tick(ms(100));
    ack_all(&mut f, 1, ms(110));
    f.coordinator.tick(ms(200));
    f.calls.take();
    // The put of checkpoint 2's `_metadata` is applied, every answer fails.
    f.faults
        .inject(Operation::Put, "chk-2/_metadata", Fault::Unclear);
    f.faults.inject_times(
        Operation::Put,
        "chk-2/_metadata",
        Fault::Fail,
        FAST.max_attempts - 1,
    );
    let events = ack_all(&mut f, 2, ms(210));
    assert!(matches!(
        &events[..],
        [CheckpointEvent::CommitOutcomeUnknown { id: 2, .. }]
    ));
    assert_eq!(f.coordinator.unresolved_commit(), Some(2));
    // The read-back is due shortly after the failed put, not in a loop.
    assert_eq!(f.coordinator.next_wakeup(), Some(ms(210) + RESOLVE_RETRY));
    // Nobody is told anything; nothing is deleted; nothing is triggered.
    assert!(f.calls.take().is_empty());
    f.faults.inject_times(
        Operation::Get,
        "chk-2/_metadata",
        Fault::Fail,
        FAST.max_attempts,
    );
    assert!(f.coordinator.tick(ms(300)).is_empty());
    assert!(f.calls.take().is_empty());
    assert_eq!(f.coordinator.store().latest().unwrap().checkpoint_id, 1);
    // Storage answers: it was committed; the tasks hear it, checkpoint 1 is
    // subsumed, and the periodic trigger goes on.
    let events = f.coordinator.tick(ms(400));
    assert!(
        matches!(&events[0], CheckpointEvent::Completed(c) if c.id == 2 && c.subsumed == vec![1])
    );
    assert_eq!(triggered(&events), vec![3]);
    let calls = f.calls.take();
    assert_eq!(
        notices(&calls, &sink()),
        vec![Notification::Complete(2), Notification::Subsumed(1)]
    );
    assert!(
        f.coordinator
            .store()
            .unreferenced_files()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_commit_unresolved_past_the_timeout_asks_for_a_failover_once() {
    let config = CheckpointConfig {
        timeout: ms(1_000),
        ..CheckpointConfig::default()
    };
    let mut f = fixture(config, 1);
    f.coordinator
        .trigger(ms(0), SnapshotType::Checkpoint, false);
    f.calls.take();
    f.coordinator.acknowledge(
        &source(),
        1,
        TaskSnapshot::default(),
        TaskCheckpointMetrics::default(),
        ms(5),
    );
    let state = snapshot(&f.storage, 1, b"state");
    // Every write fails from now on: the put and each read-back's re-put.
    f.faults.set_config(FaultConfig {
        error_rate: 1.0,
        operations: vec![Operation::Put],
        ..FaultConfig::default()
    });
    let events =
        f.coordinator
            .acknowledge(&sink(), 1, state, TaskCheckpointMetrics::default(), ms(10));
    assert!(matches!(
        &events[..],
        [CheckpointEvent::CommitOutcomeUnknown { id: 1, .. }]
    ));
    // Within the timeout the coordinator only retries.
    assert!(f.coordinator.tick(ms(500)).is_empty());
    // Past it, once: the runtime fails over.
    assert_eq!(
        f.coordinator.tick(ms(1_000)),
        vec![CheckpointEvent::CommitUnresolved { id: 1 }]
    );
    assert!(f.coordinator.tick(ms(1_200)).is_empty());
    assert!(f.calls.take().is_empty(), "nobody was told anything");
    // A new attempt's store settles it: no `_metadata`, so not committed,
    // and its files are garbage.
    f.faults.set_enabled(false);
    let mut store = CompletedCheckpointStore::open(Arc::clone(&f.storage), 1).unwrap();
    assert!(store.latest().is_none());
    assert!(!store.collect_garbage().unwrap().deleted.is_empty());
    assert!(store.unreferenced_files().unwrap().is_empty());
}

#[test]
fn an_unclear_commit_that_another_writer_holds_is_aborted() {
    let mut f = fixture(CheckpointConfig::default(), 1);
    f.coordinator
        .trigger(ms(0), SnapshotType::Checkpoint, false);
    f.faults.inject_times(
        Operation::Put,
        "chk-1/_metadata",
        Fault::Fail,
        FAST.max_attempts,
    );
    let events = ack_all(&mut f, 1, ms(10));
    assert!(matches!(
        &events[..],
        [CheckpointEvent::CommitOutcomeUnknown { id: 1, .. }]
    ));
    // Someone else's metadata under the id.
    let path = Path::from(format!("{}/chk-1/_metadata", f.storage.root()));
    futures::executor::block_on(f.faults.inner().put(&path, b"other".to_vec().into())).unwrap();
    let events = f.coordinator.tick(ms(20));
    assert_eq!(
        events,
        vec![CheckpointEvent::Aborted {
            id: 1,
            reason: FailureReason::NotCommitted
        }]
    );
    assert_eq!(
        notices(&f.calls.take(), &sink()),
        vec![Notification::Aborted(1)]
    );
}

#[test]
fn a_refused_commit_aborts_the_checkpoint() {
    let mut f = fixture(CheckpointConfig::default(), 1);
    f.coordinator
        .trigger(ms(0), SnapshotType::Checkpoint, false);
    f.coordinator.acknowledge(
        &source(),
        1,
        TaskSnapshot::default(),
        TaskCheckpointMetrics::default(),
        ms(1),
    );
    // A shared file that does not exist: the store refuses the commit.
    let mut state = snapshot(&f.storage, 1, b"x");
    if let Some(KeyedStateHandle::KeyGroups(handle)) =
        state.keyed.get_mut("counter").and_then(|h| h.first_mut())
    {
        handle.file.scope = StateScope::Shared;
        handle.file.path = "shared/missing".into();
    }
    let events =
        f.coordinator
            .acknowledge(&sink(), 1, state, TaskCheckpointMetrics::default(), ms(2));
    assert!(matches!(
        &events[0],
        CheckpointEvent::Aborted {
            id: 1,
            reason: FailureReason::FinalizeFailed(_)
        }
    ));
    assert!(f.coordinator.store().latest().is_none());
}

#[test]
fn concurrent_checkpoints_complete_in_any_order_and_older_ones_are_subsumed() {
    let config = CheckpointConfig {
        max_concurrent: 2,
        ..CheckpointConfig::every(ms(100))
    };
    let mut f = fixture(config, 3);
    f.coordinator.start(ms(0), ms(100));
    f.coordinator.tick(ms(100));
    f.coordinator.tick(ms(200));
    assert_eq!(f.coordinator.pending_ids(), vec![1, 2]);
    assert!(triggered(&f.coordinator.tick(ms(300))).is_empty());
    let events = ack_all(&mut f, 2, ms(310));
    assert_eq!(
        events[0],
        CheckpointEvent::Aborted {
            id: 1,
            reason: FailureReason::Subsumed
        }
    );
    assert!(matches!(&events[1], CheckpointEvent::Completed(c) if c.id == 2));
}

#[test]
fn savepoints_are_forced_never_subsumed_and_notify_nobody() {
    let mut f = fixture(CheckpointConfig::every(ms(100)), 1);
    f.coordinator.start(ms(0), ms(100));
    f.coordinator.tick(ms(100));
    // Checkpoint 1 pending at the limit: the savepoint starts anyway.
    let events = f
        .coordinator
        .request_savepoint(ms(110), SavepointFormat::Canonical, false);
    assert_eq!(triggered(&events), vec![2]);
    f.calls.take();
    let events = ack_all(&mut f, 2, ms(120));
    assert!(matches!(&events[..], [CheckpointEvent::Completed(c)] if !c.stops_job));
    assert!(notices(&f.calls.take(), &sink()).is_empty());
    // Checkpoint 1, older than the committed savepoint, cannot follow it
    // into the store: subsumed (not counted as a failure).
    let events = ack_all(&mut f, 1, ms(130));
    assert_eq!(
        events,
        vec![CheckpointEvent::Aborted {
            id: 1,
            reason: FailureReason::Subsumed
        }]
    );
    // Checkpoint 3 completes; retention keeps one checkpoint and the
    // savepoint.
    assert_eq!(triggered(&f.coordinator.tick(ms(300))), vec![3]);
    ack_all(&mut f, 3, ms(310));
    let kept: Vec<u64> = f
        .coordinator
        .store()
        .checkpoints()
        .map(|c| c.checkpoint_id)
        .collect();
    assert_eq!(kept, vec![2, 3]);
}

#[test]
fn stop_with_savepoint_aborts_pending_and_stops_periodic_checkpoints() {
    let mut f = fixture(CheckpointConfig::every(ms(100)), 1);
    f.coordinator.start(ms(0), ms(100));
    f.coordinator.tick(ms(100));
    let events = f
        .coordinator
        .request_savepoint(ms(150), SavepointFormat::Native, true);
    assert_eq!(
        events[0],
        CheckpointEvent::Aborted {
            id: 1,
            reason: FailureReason::CoordinatorSuspended
        }
    );
    assert_eq!(triggered(&events), vec![2]);
    f.calls.take();
    let events = ack_all(&mut f, 2, ms(160));
    assert!(matches!(&events[..], [CheckpointEvent::Completed(c)] if c.stops_job));
    // A synchronous savepoint notifies (sinks commit on it).
    assert_eq!(
        notices(&f.calls.take(), &sink()),
        vec![Notification::Complete(2)]
    );
    assert!(f.coordinator.tick(ms(1_000)).is_empty());

    // A failed stop-with-savepoint lets the job go on checkpointing.
    let mut f = fixture(CheckpointConfig::every(ms(100)), 1);
    f.coordinator.start(ms(0), ms(100));
    f.coordinator
        .request_savepoint(ms(50), SavepointFormat::Canonical, true);
    f.coordinator.decline(
        1,
        FailureReason::Declined {
            task: "sink#0".into(),
            message: "failed".into(),
        },
        ms(60),
    );
    assert_eq!(triggered(&f.coordinator.tick(ms(100))), vec![2]);
}

#[test]
fn ids_continue_after_what_the_store_knows() {
    let mut f = fixture(CheckpointConfig::default(), 1);
    f.coordinator
        .trigger(ms(0), SnapshotType::Checkpoint, false);
    ack_all(&mut f, 1, ms(1));
    f.coordinator
        .trigger(ms(2), SnapshotType::Checkpoint, false);
    f.coordinator.task_failed(ms(3));
    let store = CompletedCheckpointStore::open(Arc::clone(&f.storage), 1).unwrap();
    let reopened = CheckpointCoordinator::new(
        CheckpointConfig::default(),
        "job",
        [source()],
        [source()],
        store,
        Box::new(Recorder::default()),
    )
    .unwrap();
    assert_eq!(reopened.next_checkpoint_id(), 2);
    assert_eq!(f.coordinator.next_checkpoint_id(), 3);
}

#[test]
fn invalid_settings_name_their_key() {
    let f = fixture(CheckpointConfig::default(), 1);
    let store = f.coordinator.into_store();
    let config = CheckpointConfig::every(ms(5));
    let Err(error) = CheckpointCoordinator::new(
        config,
        "job",
        [source()],
        [source()],
        store,
        Box::new(Recorder::default()),
    ) else {
        panic!("accepted an interval of 5 ms");
    };
    assert!(
        error
            .to_string()
            .contains("execution.checkpointing.interval"),
        "{error}"
    );
}

#[test]
fn completion_sets_flinks_metrics() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let mut f = fixture(CheckpointConfig::default(), 1);
        f.coordinator
            .trigger(ms(0), SnapshotType::Checkpoint, false);
        let task_metrics = TaskCheckpointMetrics {
            start_delay: ms(3),
            alignment: ms(7),
            sync_duration: ms(2),
            async_duration: ms(30),
            persisted_in_flight_bytes: 512,
            unaligned: true,
        };
        f.coordinator
            .acknowledge(&source(), 1, TaskSnapshot::default(), task_metrics, ms(35));
        let state = snapshot(&f.storage, 1, &1u64.to_le_bytes());
        f.coordinator
            .acknowledge(&sink(), 1, state, TaskCheckpointMetrics::default(), ms(40));
    });
    // Task figures are labelled with the task's vertex and subtask.
    let mut values = std::collections::HashMap::new();
    let mut source_task = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let name = key.key().name().to_string();
        let mut labels = key.key().labels();
        if key.key().labels().next().is_none() {
            values.insert(name, value);
        } else if labels.any(|l| l.key() == "vertex" && l.value() == source().vertex) {
            source_task.insert(name, value);
        }
    }
    assert_eq!(
        source_task["checkpointAlignmentTime"],
        DebugValue::Gauge(7e6.into())
    );
    assert_eq!(
        source_task["checkpointStartDelayNanos"],
        DebugValue::Gauge(3e6.into())
    );
    assert_eq!(
        source_task["checkpointAsyncDurationNanos"],
        DebugValue::Gauge(30e6.into())
    );
    assert_eq!(
        source_task["checkpointPersistedInFlightBytes"],
        DebugValue::Gauge(512.0.into())
    );
    assert_eq!(
        values["lastCheckpointPersistedData"],
        DebugValue::Gauge(512.0.into())
    );
    assert_eq!(
        values["lastCheckpointDuration"],
        DebugValue::Gauge(40.0.into())
    );
    assert_eq!(
        values["lastCompletedCheckpointId"],
        DebugValue::Gauge(1.0.into())
    );
    assert_eq!(
        values["lastCheckpointFullSize"],
        DebugValue::Gauge(8.0.into())
    );
    assert_eq!(
        values["numberOfCompletedCheckpoints"],
        DebugValue::Counter(1)
    );
}

#[test]
fn operator_state_is_committed_restored_and_collected_with_its_checkpoint() {
    use crate::operator_state::OperatorStateBackend;

    let mut f = fixture(CheckpointConfig::default(), 1);
    for id in 1..=2u64 {
        f.coordinator
            .trigger(ms(id), SnapshotType::Checkpoint, false);
        let mut offsets = OperatorStateBackend::new(0, 1);
        offsets
            .list_state("offsets")
            .push(id.to_le_bytes().to_vec());
        let handle = offsets.snapshot(id, &*f.storage).unwrap().unwrap();
        f.coordinator.acknowledge(
            &source(),
            id,
            TaskSnapshot::default().with_operator_state("source", handle),
            TaskCheckpointMetrics::default(),
            ms(id),
        );
        f.coordinator.acknowledge(
            &sink(),
            id,
            TaskSnapshot::default(),
            TaskCheckpointMetrics::default(),
            ms(id),
        );
    }
    let store = f.coordinator.store();
    let latest = store.latest().unwrap();
    let restored =
        OperatorStateBackend::restore(&latest.operator_states["source"], 0, 2, &*f.storage)
            .unwrap();
    assert_eq!(restored.list("offsets"), [2u64.to_le_bytes().to_vec()]);
    // Checkpoint 1's operator state went with it; nothing is unreferenced.
    assert!(store.unreferenced_files().unwrap().is_empty());
    let files = f.storage.list_files(None).unwrap();
    assert!(files.iter().all(|f| !f.starts_with("chk-1/")), "{files:?}");
}
