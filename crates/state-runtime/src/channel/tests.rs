use std::thread;
use std::time::{Duration, Instant};

use super::*;
use crate::barrier::CheckpointOptions;

fn barrier(id: u64, options: CheckpointOptions) -> CheckpointBarrier {
    CheckpointBarrier {
        id,
        timestamp_ms: 0,
        options,
    }
}

fn record(item: Option<(usize, Received<u32>)>) -> (usize, u32) {
    match item {
        Some((channel, Received::Record(record))) => (channel, record),
        other => panic!("expected a record, got {other:?}"),
    }
}

#[test]
fn a_full_channel_back_pressures_its_producer() {
    let (gate, mut senders) = InputGate::<u32>::new(1, 2);
    let sender = senders.remove(0);
    let producer = thread::spawn(move || {
        for value in 0..5 {
            sender.send(value).expect("gate open");
        }
        sender.end();
    });
    thread::sleep(Duration::from_millis(50));
    // The producer stopped at the capacity.
    assert_eq!(gate.queued_records(0), 2);
    let mut values = Vec::new();
    while let Some((_, item)) = gate.recv(|_| true, None) {
        match item {
            Received::Record(value) => values.push(value),
            Received::EndOfInput => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    producer.join().expect("producer");
    assert_eq!(values, vec![0, 1, 2, 3, 4]);
}

#[test]
fn an_aligned_barrier_keeps_its_place_and_a_blocked_channel_is_not_read() {
    let (gate, senders) = InputGate::<u32>::new(2, 16);
    senders[0].send(1).unwrap();
    senders[0]
        .send_barrier(barrier(1, CheckpointOptions::aligned()))
        .unwrap();
    senders[0].send(2).unwrap();
    senders[1].send(10).unwrap();
    assert_eq!(record(gate.recv(|_| true, None)), (0, 1));
    assert_eq!(record(gate.recv(|_| true, None)), (1, 10));
    assert!(matches!(
        gate.recv(|_| true, None),
        Some((0, Received::Barrier { overtaken, .. })) if overtaken.is_empty()
    ));
    // Channel 0 blocked: its record waits, but its cancellation marker
    // (a priority event) comes through.
    let deadline = Instant::now() + Duration::from_millis(20);
    assert_eq!(gate.recv(|channel| channel != 0, Some(deadline)), None);
    senders[0].send_cancel(1).unwrap();
    assert_eq!(
        gate.recv(|channel| channel != 0, None),
        Some((0, Received::Cancel(1)))
    );
    assert_eq!(record(gate.recv(|_| true, None)), (0, 2));
}

#[test]
fn an_unaligned_barrier_overtakes_the_queue_and_carries_copies() {
    let (gate, senders) = InputGate::<u32>::new(2, 16);
    senders[1].send(5).unwrap();
    senders[1].send(6).unwrap();
    senders[1]
        .send_barrier(barrier(3, CheckpointOptions::unaligned()))
        .unwrap();
    senders[1].send(7).unwrap();
    let Some((1, Received::Barrier { barrier, overtaken })) = gate.recv(|_| true, None) else {
        panic!("expected the barrier first");
    };
    assert_eq!(barrier.id, 3);
    assert_eq!(overtaken, vec![5, 6]);
    // The overtaken records are still processed, in order.
    assert_eq!(record(gate.recv(|_| true, None)), (1, 5));
    assert_eq!(record(gate.recv(|_| true, None)), (1, 6));
    assert_eq!(record(gate.recv(|_| true, None)), (1, 7));
}

#[test]
fn a_timed_out_barrier_moves_ahead_of_the_records_before_it() {
    let (gate, senders) = InputGate::<u32>::new(2, 16);
    let timeoutable = barrier(
        4,
        CheckpointOptions::aligned_with_timeout(Duration::from_millis(1)),
    );
    senders[0].send(1).unwrap();
    senders[0].send(2).unwrap();
    senders[0].send_barrier(timeoutable).unwrap();
    senders[0].send(3).unwrap();
    assert!(gate.prioritize(0, 4));
    let Some((0, Received::Barrier { barrier, overtaken })) = gate.recv(|_| true, None) else {
        panic!("expected the barrier first");
    };
    assert_eq!(barrier.options.alignment, AlignmentType::Unaligned);
    assert_eq!(overtaken, vec![1, 2]);
    assert_eq!(
        (0..3)
            .map(|_| record(gate.recv(|_| true, None)).1)
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );

    // Not sent yet: it goes ahead when it is.
    senders[1].send(8).unwrap();
    assert!(!gate.prioritize(1, 5));
    senders[1]
        .send_barrier(barrier_with_id(5, timeoutable))
        .unwrap();
    assert!(matches!(
        gate.recv(|_| true, None),
        Some((1, Received::Barrier { overtaken, .. })) if overtaken == vec![8]
    ));
}

fn barrier_with_id(id: u64, barrier: CheckpointBarrier) -> CheckpointBarrier {
    CheckpointBarrier { id, ..barrier }
}

#[test]
fn recovered_records_come_before_new_ones() {
    let (gate, senders) = InputGate::<u32>::new(1, 1);
    senders[0].send(9).unwrap();
    gate.recover(0, [1, 2, 3]);
    let values: Vec<u32> = (0..4)
        .map(|_| record(gate.recv(|_| true, None)).1)
        .collect();
    assert_eq!(values, vec![1, 2, 3, 9]);
}

#[test]
fn ends_disconnections_wakes_and_deadlines() {
    let (gate, mut senders) = InputGate::<u32>::new(2, 4);
    let failed = senders.pop().expect("two senders");
    drop(failed);
    senders.pop().expect("one sender").end();
    let mut seen = vec![
        gate.recv(|_| true, None).expect("an event"),
        gate.recv(|_| true, None).expect("an event"),
    ];
    seen.sort_by_key(|(channel, _)| *channel);
    assert_eq!(
        seen,
        vec![(0, Received::EndOfInput), (1, Received::Disconnected)]
    );
    // Every channel over: recv returns at once.
    assert_eq!(gate.recv(|_| true, None), None);

    let (gate, _senders) = InputGate::<u32>::new(1, 4);
    let waker = gate.waker();
    let waking = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        waker.wake();
    });
    assert_eq!(gate.recv(|_| true, None), None);
    waking.join().expect("waker");
    let started = Instant::now();
    assert_eq!(
        gate.recv(|_| true, Some(started + Duration::from_millis(10))),
        None
    );
    assert!(started.elapsed() >= Duration::from_millis(10));
}

#[test]
fn a_closed_gate_fails_its_producers_even_blocked_ones() {
    let (gate, mut senders) = InputGate::<u32>::new(1, 1);
    let sender = senders.remove(0);
    sender.send(1).unwrap();
    let producer = thread::spawn(move || sender.send(2));
    thread::sleep(Duration::from_millis(20));
    drop(gate);
    assert_eq!(producer.join().expect("producer"), Err(GateClosed));
}
