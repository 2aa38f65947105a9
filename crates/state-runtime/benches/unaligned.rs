//! Checkpoints under back-pressure, aligned against unaligned: two sources
//! feed a slow task over bounded in-process channels; the coordinator
//! triggers a checkpoint every 300 ms; the task acknowledges after its
//! snapshot (aligned) or once its in-flight records are written
//! (unaligned). Prints the median checkpoint duration, alignment time and
//! persisted in-flight bytes of each mode and their ratio.
//!
//! `cargo bench -p state-runtime --bench unaligned` (`BENCH_CHECKPOINTS=<n>`
//! sets how many checkpoints each mode completes, default 8).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use state_api::{CheckpointStorageAccess, SnapshotType};
use state_runtime::channel::{ChannelSender, InputGate};
use state_runtime::coordinator::{
    CheckpointConfig, CheckpointCoordinator, CheckpointEvent, Notification, TaskCheckpointMetrics,
    TaskGateway, TaskId, TaskSnapshot,
};
use state_runtime::input::{CheckpointedInput, InputEvent, RecordEncoder};
use state_runtime::{CheckpointBarrier, CheckpointingMode};
use state_storage::{CompletedCheckpointStore, ObjectStoreCheckpointStorage};

const SOURCES: u32 = 2;
/// Records a channel holds before its producer blocks.
const CHANNEL_CAPACITY: usize = 2_000;
/// What the slow task spends per record.
const WORK_PER_RECORD: Duration = Duration::from_micros(50);
/// Bytes of a record's payload.
const RECORD_BYTES: usize = 64;

enum Message {
    Ack(TaskId, u64, TaskSnapshot, TaskCheckpointMetrics),
}

/// Triggers go to the sources' inboxes; notices are ignored (nothing to
/// clean up in memory).
struct Gateway {
    sources: Vec<mpsc::Sender<CheckpointBarrier>>,
}

impl TaskGateway for Gateway {
    fn trigger(&mut self, task: &TaskId, barrier: CheckpointBarrier) {
        let _ = self.sources[task.subtask as usize].send(barrier);
    }

    fn notify(&mut self, _task: &TaskId, _notification: Notification) {}
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

#[derive(Clone, Copy, Debug)]
struct Figures {
    duration: Duration,
    alignment: Duration,
    persisted_bytes: u64,
}

fn source(
    subtask: u32,
    output: ChannelSender<(u64, Vec<u8>)>,
    triggers: mpsc::Receiver<CheckpointBarrier>,
    acks: mpsc::Sender<Message>,
    stop: Arc<AtomicBool>,
) {
    let task = TaskId::new("source", subtask);
    let mut offset = 0u64;
    while !stop.load(Ordering::Relaxed) {
        while let Ok(barrier) = triggers.try_recv() {
            // A source's state (its offset) is a few bytes; its snapshot is
            // not what this measures.
            let _ = acks.send(Message::Ack(
                task.clone(),
                barrier.id,
                TaskSnapshot::default(),
                TaskCheckpointMetrics::default(),
            ));
            if output.send_barrier(barrier).is_err() {
                return;
            }
        }
        let record = (
            offset * u64::from(SOURCES) + u64::from(subtask),
            vec![7u8; RECORD_BYTES],
        );
        if output.send(record).is_err() {
            return;
        }
        offset += 1;
    }
    output.end();
}

fn slow_task(
    mut input: CheckpointedInput<(u64, Vec<u8>)>,
    acks: mpsc::Sender<Message>,
    stop: Arc<AtomicBool>,
) {
    let task = TaskId::new("slow", 0);
    let mut sum = 0u64;
    let mut pending_metrics = TaskCheckpointMetrics::default();
    loop {
        let deadline = Some(Instant::now() + Duration::from_millis(50));
        let event = match input.next(deadline) {
            Ok(event) => event,
            Err(error) => panic!("input: {error}"),
        };
        match event {
            InputEvent::Record { record, .. } => {
                sum = sum.wrapping_add(record.0);
                let started = Instant::now();
                while started.elapsed() < WORK_PER_RECORD {
                    std::hint::spin_loop();
                }
            }
            InputEvent::Snapshot(trigger) => {
                pending_metrics = TaskCheckpointMetrics {
                    start_delay: trigger.start_delay,
                    alignment: trigger.alignment,
                    unaligned: trigger.is_unaligned(),
                    ..TaskCheckpointMetrics::default()
                };
                if !trigger.is_unaligned() {
                    let _ = acks.send(Message::Ack(
                        task.clone(),
                        trigger.barrier.id,
                        TaskSnapshot::default(),
                        pending_metrics,
                    ));
                }
            }
            InputEvent::ChannelStateWritten {
                id,
                handle,
                alignment,
                persisted_bytes,
            } => {
                let mut snapshot = TaskSnapshot::default();
                if let Some(handle) = handle {
                    snapshot = snapshot.with_channel_state("slow", handle);
                }
                let metrics = TaskCheckpointMetrics {
                    alignment,
                    persisted_in_flight_bytes: persisted_bytes,
                    ..pending_metrics
                };
                let _ = acks.send(Message::Ack(task.clone(), id, snapshot, metrics));
            }
            InputEvent::Finished | InputEvent::UpstreamFailed { .. } => break,
            InputEvent::Abort { .. } | InputEvent::Idle => {}
        }
        if stop.load(Ordering::Relaxed) && input.handler().all_ended() {
            break;
        }
    }
    std::hint::black_box(sum);
}

fn run(unaligned: bool, checkpoints: usize) -> Vec<Figures> {
    let storage = Arc::new(ObjectStoreCheckpointStorage::in_memory("bench").expect("storage"));
    let access: Arc<dyn CheckpointStorageAccess> = storage.clone();
    let store = CompletedCheckpointStore::open(Arc::clone(&storage), 1).expect("store");
    let (gate, senders) = InputGate::new(SOURCES as usize, CHANNEL_CAPACITY);
    let (acks_tx, acks_rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let mut inboxes = Vec::new();
    let mut threads = Vec::new();
    for (subtask, sender) in senders.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel();
        inboxes.push(tx);
        let (acks, stop) = (acks_tx.clone(), Arc::clone(&stop));
        threads.push(thread::spawn(move || {
            source(subtask as u32, sender, rx, acks, stop);
        }));
    }
    let encoder: RecordEncoder<(u64, Vec<u8>)> = Box::new(|record| {
        let mut bytes = record.0.to_le_bytes().to_vec();
        bytes.extend_from_slice(&record.1);
        Ok(Some((Some((record.0 % 128) as u32), bytes)))
    });
    let input = CheckpointedInput::new(gate, 0, 0, 1, access, encoder);
    {
        let (acks, stop) = (acks_tx.clone(), Arc::clone(&stop));
        threads.push(thread::spawn(move || slow_task(input, acks, stop)));
    }
    let config = CheckpointConfig {
        mode: CheckpointingMode::ExactlyOnce,
        unaligned,
        aligned_checkpoint_timeout: Duration::ZERO,
        timeout: Duration::from_secs(120),
        ..CheckpointConfig::every(Duration::from_millis(300))
    };
    let tasks = (0..SOURCES)
        .map(|s| TaskId::new("source", s))
        .chain([TaskId::new("slow", 0)]);
    let sources = (0..SOURCES).map(|s| TaskId::new("source", s));
    let mut coordinator = CheckpointCoordinator::new(
        config,
        "bench",
        tasks,
        sources,
        store,
        Box::new(Gateway { sources: inboxes }),
    )
    .expect("coordinator");
    // Let back-pressure build up before the first checkpoint.
    coordinator.start(now(), Duration::from_millis(500));
    let mut figures = Vec::new();
    while figures.len() < checkpoints {
        let mut events = coordinator.tick(now());
        if let Ok(Message::Ack(task, id, snapshot, metrics)) =
            acks_rx.recv_timeout(Duration::from_millis(10))
        {
            events.extend(coordinator.acknowledge(&task, id, snapshot, metrics, now()));
        }
        for event in events {
            if let CheckpointEvent::Completed(completed) = event
                && completed.snapshot_type == SnapshotType::Checkpoint
            {
                figures.push(Figures {
                    duration: completed.duration,
                    alignment: completed.max_alignment(),
                    persisted_bytes: completed.persisted_in_flight_bytes(),
                });
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    drop(acks_rx);
    for thread in threads {
        let _ = thread.join();
    }
    figures
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort_unstable();
    values[values.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is expected.
    let checkpoints: usize = std::env::var("BENCH_CHECKPOINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    println!(
        "{SOURCES} sources -> 1 task at {WORK_PER_RECORD:?}/record, channels of {CHANNEL_CAPACITY} records, {checkpoints} checkpoints per mode"
    );
    let mut medians = Vec::new();
    for (name, unaligned) in [("aligned", false), ("unaligned", true)] {
        let figures = run(unaligned, checkpoints);
        let duration = median(figures.iter().map(|f| f.duration).collect());
        let alignment = median(figures.iter().map(|f| f.alignment).collect());
        let persisted = figures.iter().map(|f| f.persisted_bytes).max().unwrap_or(0);
        println!(
            "{name:>9}: checkpoint duration median {duration:>10.1?}, alignment median {alignment:>10.1?}, persisted in-flight up to {persisted} bytes"
        );
        medians.push(duration);
    }
    let ratio = medians[0].as_secs_f64() / medians[1].as_secs_f64().max(1e-9);
    println!("aligned / unaligned checkpoint duration: {ratio:.1}x");
}
