use std::thread;

use state_storage::ObjectStoreCheckpointStorage;

use super::*;
use crate::barrier::{CheckpointBarrier, CheckpointOptions};
use crate::channel::ChannelSender;
use crate::channel_state::recover;

type Senders = Vec<ChannelSender<u64>>;

fn input(
    channels: usize,
) -> (
    CheckpointedInput<u64>,
    Senders,
    Arc<dyn CheckpointStorageAccess>,
) {
    let storage: Arc<dyn CheckpointStorageAccess> =
        Arc::new(ObjectStoreCheckpointStorage::in_memory("job").unwrap());
    let (gate, senders) = InputGate::new(channels, 64);
    let encoder: RecordEncoder<u64> = Box::new(|record: &u64| {
        Ok(Some((
            Some((*record % 128) as u32),
            record.to_le_bytes().to_vec(),
        )))
    });
    let input = CheckpointedInput::new(gate, 0, 0, 1, Arc::clone(&storage), encoder);
    (input, senders, storage)
}

fn barrier(id: u64, options: CheckpointOptions) -> CheckpointBarrier {
    let now = u64::try_from(wall_clock().as_millis()).unwrap();
    CheckpointBarrier {
        id,
        timestamp_ms: now,
        options,
    }
}

/// Reads events until one that is not a record; returns the records read
/// and that event.
fn until_event(input: &mut CheckpointedInput<u64>) -> (Vec<u64>, InputEvent<u64>) {
    let mut records = Vec::new();
    loop {
        match input
            .next(Some(Instant::now() + Duration::from_secs(5)))
            .unwrap()
        {
            InputEvent::Record { record, .. } => records.push(record),
            InputEvent::Idle => panic!("idle after {records:?}"),
            event => return (records, event),
        }
    }
}

/// The records a channel state handle holds, per channel.
fn persisted(
    handle: &ChannelStateHandle,
    storage: &dyn CheckpointStorageAccess,
) -> Vec<(u32, Vec<u64>)> {
    recover(std::slice::from_ref(handle), 0, 1, None, storage)
        .unwrap()
        .into_iter()
        .map(|r| {
            let values = r
                .records
                .iter()
                .map(|b| u64::from_le_bytes(b.as_slice().try_into().unwrap()))
                .collect();
            (r.channel, values)
        })
        .collect()
}

#[test]
fn unaligned_persists_overtaken_and_captured_records_once() {
    let (mut input, senders, storage) = input(2);
    senders[1].send(10).unwrap();
    senders[0].send(1).unwrap();
    senders[0].send(2).unwrap();
    let unaligned = barrier(1, CheckpointOptions::unaligned());
    senders[0].send_barrier(unaligned).unwrap();
    // The barrier overtakes 1 and 2: snapshot first.
    let (records, event) = until_event(&mut input);
    assert!(records.is_empty());
    assert!(matches!(event, InputEvent::Snapshot(t) if t.is_unaligned() && t.capturing == vec![1]));
    // Everything queued is still processed; channel 1's record is captured.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match input
            .next(Some(Instant::now() + Duration::from_secs(5)))
            .unwrap()
        {
            InputEvent::Record { record, .. } => seen.push(record),
            other => panic!("{other:?}"),
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, vec![1, 2, 10]);
    senders[1].send_barrier(unaligned).unwrap();
    let (_, event) = until_event(&mut input);
    let InputEvent::ChannelStateWritten {
        id: 1,
        handle: Some(handle),
        persisted_bytes,
        ..
    } = event
    else {
        panic!("{event:?}");
    };
    assert_eq!(
        persisted(&handle, &*storage),
        vec![(0, vec![1, 2]), (1, vec![10])]
    );
    assert!(persisted_bytes > 0);
}

#[test]
fn aligned_blocks_and_snapshots_without_channel_state() {
    let (mut input, senders, _storage) = input(2);
    let aligned = barrier(1, CheckpointOptions::aligned());
    senders[0].send_barrier(aligned).unwrap();
    senders[0].send(5).unwrap();
    senders[1].send(6).unwrap();
    // Channel 0 is blocked after its barrier: only 6 comes through.
    assert!(matches!(
        input.next(None).unwrap(),
        InputEvent::Record { record: 6, .. }
    ));
    assert!(matches!(
        input
            .next(Some(Instant::now() + Duration::from_millis(20)))
            .unwrap(),
        InputEvent::Idle
    ));
    senders[1].send_barrier(aligned).unwrap();
    let (records, event) = until_event(&mut input);
    assert!(records.is_empty());
    assert!(matches!(event, InputEvent::Snapshot(t) if !t.is_unaligned()));
    assert!(matches!(
        input.next(None).unwrap(),
        InputEvent::Record { record: 5, .. }
    ));
}

#[test]
fn a_timed_out_alignment_persists_what_the_barrier_overtakes() {
    let (mut input, senders, storage) = input(2);
    let timeoutable = barrier(
        1,
        CheckpointOptions::aligned_with_timeout(Duration::from_millis(50)),
    );
    senders[0].send_barrier(timeoutable).unwrap();
    // Channel 0's barrier is read and blocks it; nothing else to do yet.
    let event = input
        .next(Some(Instant::now() + Duration::from_millis(5)))
        .unwrap();
    assert!(matches!(event, InputEvent::Idle), "{event:?}");
    // Channel 1's barrier is stuck behind records the task has not read.
    for value in [20, 21, 22] {
        senders[1].send(value).unwrap();
    }
    senders[1].send_barrier(timeoutable).unwrap();
    thread::sleep(Duration::from_millis(60));
    // The timeout passed: snapshot unaligned, the barrier moves ahead of
    // 20..22, which become channel state and are then processed.
    let (records, event) = until_event(&mut input);
    assert!(records.is_empty(), "{records:?}");
    assert!(matches!(event, InputEvent::Snapshot(t) if t.is_unaligned()));
    let (records, event) = until_event(&mut input);
    assert!(records.is_empty(), "{records:?}");
    let InputEvent::ChannelStateWritten {
        handle: Some(handle),
        ..
    } = event
    else {
        panic!("{event:?}");
    };
    assert_eq!(persisted(&handle, &*storage), vec![(1, vec![20, 21, 22])]);
    let mut rest = Vec::new();
    for _ in 0..3 {
        if let InputEvent::Record { record, .. } = input.next(None).unwrap() {
            rest.push(record);
        }
    }
    assert_eq!(rest, vec![20, 21, 22]);
}

#[test]
fn cancellations_ends_and_failures_reach_the_task() {
    let (mut input, mut senders, _storage) = input(2);
    senders[0].send_cancel(3).unwrap();
    assert!(matches!(
        input.next(None).unwrap(),
        InputEvent::Abort {
            id: 3,
            reason: AbortReason::CancelledUpstream
        }
    ));
    let failed = senders.pop().unwrap();
    drop(failed);
    assert!(matches!(
        input.next(None).unwrap(),
        InputEvent::UpstreamFailed { channel: 1 }
    ));
    senders.pop().unwrap().end();
    // Channel 0 ended; channel 1 failed (never ends): idle, not finished.
    assert!(matches!(
        input
            .next(Some(Instant::now() + Duration::from_millis(10)))
            .unwrap(),
        InputEvent::Idle
    ));
}
