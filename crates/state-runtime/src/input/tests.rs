//! Transition tests of the barrier handler, and a property test that
//! alignment never deadlocks and triggers every checkpoint once, in order.

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::barrier::{CheckpointBarrier, CheckpointOptions};

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

fn barrier(id: u64, options: CheckpointOptions) -> CheckpointBarrier {
    CheckpointBarrier {
        id,
        timestamp_ms: 100 * id,
        options,
    }
}

fn aligned(id: u64) -> CheckpointBarrier {
    barrier(id, CheckpointOptions::aligned())
}

fn trigger(actions: &[HandlerAction]) -> &Trigger {
    match actions {
        [HandlerAction::Trigger(trigger)] => trigger,
        other => panic!("expected one trigger, got {other:?}"),
    }
}

#[test]
fn aligned_blocks_each_channel_until_the_last_barrier() {
    let mut handler = BarrierHandler::new(3);
    assert!(handler.on_barrier(0, &aligned(1), ms(110)).is_empty());
    assert!(handler.is_blocked(0) && !handler.is_blocked(1) && !handler.is_blocked(2));
    // A barrier on one channel while another is blocked: both blocked.
    assert!(handler.on_barrier(2, &aligned(1), ms(130)).is_empty());
    assert!(handler.is_blocked(0) && !handler.is_blocked(1) && handler.is_blocked(2));
    assert_eq!(handler.pending_checkpoint(), Some(1));

    let actions = handler.on_barrier(1, &aligned(1), ms(150));
    let trigger = trigger(&actions);
    assert_eq!(trigger.barrier, aligned(1));
    assert_eq!(trigger.start_delay, ms(10));
    assert_eq!(trigger.alignment, ms(40));
    assert!(!trigger.is_unaligned() && trigger.capturing.is_empty());
    assert!((0..3).all(|channel| !handler.is_blocked(channel)));
    assert_eq!(handler.pending_checkpoint(), None);
}

#[test]
fn a_newer_barrier_aborts_the_unfinished_alignment() {
    let mut handler = BarrierHandler::new(2);
    handler.on_barrier(0, &aligned(1), ms(100));
    let actions = handler.on_barrier(1, &aligned(2), ms(200));
    assert_eq!(
        actions,
        vec![HandlerAction::Abort {
            id: 1,
            reason: AbortReason::Subsumed
        }]
    );
    assert!(!handler.is_blocked(0) && handler.is_blocked(1));
    // The late barrier of checkpoint 1 starts nothing and blocks nothing.
    assert!(handler.on_barrier(0, &aligned(1), ms(210)).is_empty());
    assert!(!handler.is_blocked(0));
    assert_eq!(
        trigger(&handler.on_barrier(0, &aligned(2), ms(220)))
            .barrier
            .id,
        2
    );
}

#[test]
fn a_cancellation_marker_aborts_and_unblocks() {
    let mut handler = BarrierHandler::new(2);
    handler.on_barrier(0, &aligned(1), ms(100));
    let actions = handler.on_cancel(1);
    assert_eq!(
        actions,
        vec![HandlerAction::Abort {
            id: 1,
            reason: AbortReason::CancelledUpstream
        }]
    );
    assert!(!handler.is_blocked(0));
    // The other channel's barrier and marker of checkpoint 1 do nothing.
    assert!(handler.on_barrier(1, &aligned(1), ms(110)).is_empty());
    assert!(handler.on_cancel(1).is_empty());
    assert!(!handler.is_blocked(1));

    // A marker of a checkpoint not started yet aborts it once, and its
    // barriers are ignored afterwards.
    assert_eq!(handler.on_cancel(3).len(), 1);
    assert!(handler.on_barrier(0, &aligned(3), ms(300)).is_empty());
    assert!(!handler.is_blocked(0));
    // A marker of a newer checkpoint during an alignment aborts both.
    handler.on_barrier(0, &aligned(4), ms(400));
    assert_eq!(
        handler.on_cancel(5),
        vec![
            HandlerAction::Abort {
                id: 4,
                reason: AbortReason::Subsumed
            },
            HandlerAction::Abort {
                id: 5,
                reason: AbortReason::CancelledUpstream
            }
        ]
    );
}

#[test]
fn end_of_input_counts_as_the_channels_barrier() {
    let mut handler = BarrierHandler::new(3);
    handler.on_barrier(0, &aligned(1), ms(100));
    assert!(handler.on_end_of_input(1, ms(105)).is_empty());
    let actions = handler.on_end_of_input(2, ms(120));
    assert_eq!(trigger(&actions).alignment, ms(20));
    // Later checkpoints need only the open channel.
    assert_eq!(
        trigger(&handler.on_barrier(0, &aligned(2), ms(200)))
            .barrier
            .id,
        2
    );
    assert!(!handler.all_ended());
    handler.on_end_of_input(0, ms(300));
    assert!(handler.all_ended());
}

#[test]
fn unaligned_triggers_on_the_first_barrier_and_captures_the_others() {
    let mut handler = BarrierHandler::new(3);
    let unaligned = barrier(1, CheckpointOptions::unaligned());
    let actions = handler.on_barrier(1, &unaligned, ms(100));
    let trigger = trigger(&actions);
    assert!(trigger.is_unaligned());
    assert_eq!(trigger.capturing, vec![0, 2]);
    assert_eq!(trigger.start_delay, ms(0));
    // Nothing blocks; the channels without the barrier are captured.
    assert!((0..3).all(|channel| !handler.is_blocked(channel)));
    assert_eq!(handler.capturing(0), Some(1));
    assert_eq!(handler.capturing(1), None);
    assert_eq!(handler.capturing(2), Some(1));

    assert!(handler.on_barrier(0, &unaligned, ms(110)).is_empty());
    assert_eq!(handler.capturing(0), None);
    assert_eq!(
        handler.on_barrier(2, &unaligned, ms(140)),
        vec![HandlerAction::ChannelStateComplete {
            id: 1,
            alignment: ms(40)
        }]
    );
    assert_eq!(handler.capturing(2), None);
    assert_eq!(handler.pending_checkpoint(), None);
}

#[test]
fn unaligned_on_one_channel_completes_at_once() {
    let mut handler = BarrierHandler::new(1);
    let actions = handler.on_barrier(0, &barrier(1, CheckpointOptions::unaligned()), ms(100));
    assert!(matches!(&actions[0], HandlerAction::Trigger(t) if t.is_unaligned()));
    assert_eq!(
        actions[1],
        HandlerAction::ChannelStateComplete {
            id: 1,
            alignment: ms(0)
        }
    );
}

#[test]
fn a_newer_barrier_aborts_an_unfinished_unaligned_checkpoint() {
    let mut handler = BarrierHandler::new(2);
    handler.on_barrier(0, &barrier(1, CheckpointOptions::unaligned()), ms(100));
    let actions = handler.on_barrier(0, &barrier(2, CheckpointOptions::unaligned()), ms(200));
    assert_eq!(
        actions[0],
        HandlerAction::Abort {
            id: 1,
            reason: AbortReason::Subsumed
        }
    );
    assert!(matches!(&actions[1], HandlerAction::Trigger(t) if t.barrier.id == 2));
    assert_eq!(handler.capturing(1), Some(2));
}

#[test]
fn an_alignment_that_times_out_switches_to_unaligned() {
    let mut handler = BarrierHandler::new(3);
    let timeoutable = barrier(1, CheckpointOptions::aligned_with_timeout(ms(50)));
    assert!(handler.on_barrier(0, &timeoutable, ms(110)).is_empty());
    assert_eq!(handler.next_deadline(), Some(ms(150)));
    assert!(handler.on_timer(ms(149)).is_empty());
    assert!(handler.is_blocked(0));

    let actions = handler.on_timer(ms(150));
    let HandlerAction::Trigger(trigger) = &actions[0] else {
        panic!("expected a trigger, got {actions:?}");
    };
    assert!(trigger.is_unaligned());
    assert_eq!(trigger.capturing, vec![1, 2]);
    assert_eq!(
        actions[1..],
        [
            HandlerAction::Prioritize { channel: 1, id: 1 },
            HandlerAction::Prioritize { channel: 2, id: 1 }
        ]
    );
    // The blocked channel is free again; the others are captured.
    assert!(!handler.is_blocked(0));
    assert_eq!(handler.capturing(1), Some(1));
    assert_eq!(handler.next_deadline(), None);
    assert!(handler.on_barrier(1, &timeoutable, ms(160)).is_empty());
    assert!(matches!(
        handler.on_barrier(2, &timeoutable, ms(170))[..],
        [HandlerAction::ChannelStateComplete { id: 1, .. }]
    ));
}

#[test]
fn a_barrier_after_its_deadline_starts_unaligned() {
    let mut handler = BarrierHandler::new(2);
    let late = barrier(1, CheckpointOptions::aligned_with_timeout(ms(50)));
    let actions = handler.on_barrier(1, &late, ms(400));
    assert_eq!(trigger(&actions).capturing, vec![0]);
    assert!(trigger(&actions).is_unaligned());
    // A barrier of another channel that arrives after the deadline
    // switches the alignment before it is counted.
    let mut handler = BarrierHandler::new(3);
    handler.on_barrier(0, &late, ms(120));
    let actions = handler.on_barrier(1, &late, ms(400));
    assert!(matches!(&actions[0], HandlerAction::Trigger(t) if t.capturing == vec![1, 2]));
    assert_eq!(handler.capturing(1), None);
    assert_eq!(handler.capturing(2), Some(1));
}

#[test]
fn savepoint_barriers_never_switch() {
    let mut handler = BarrierHandler::new(2);
    let forced = barrier(
        1,
        CheckpointOptions {
            alignment: crate::AlignmentType::ForcedAligned,
            ..CheckpointOptions::aligned_with_timeout(ms(1))
        },
    );
    handler.on_barrier(0, &forced, ms(100));
    assert!(handler.on_timer(ms(10_000)).is_empty());
    assert!(handler.is_blocked(0));
    assert!(!trigger(&handler.on_barrier(1, &forced, ms(10_001))).is_unaligned());
}

#[test]
fn at_least_once_never_blocks_and_tracks_several_checkpoints() {
    let mut handler = BarrierHandler::new(2);
    let b1 = barrier(1, CheckpointOptions::at_least_once());
    let b2 = barrier(2, CheckpointOptions::at_least_once());
    let b3 = barrier(3, CheckpointOptions::at_least_once());
    assert!(handler.on_barrier(0, &b1, ms(100)).is_empty());
    assert!(handler.on_barrier(0, &b2, ms(200)).is_empty());
    assert!(!handler.is_blocked(0));
    assert_eq!(
        trigger(&handler.on_barrier(1, &b1, ms(230))).alignment,
        ms(130)
    );
    // Channel 1 never delivers 2 (cancelled upstream); completing 3 drops it.
    handler.on_barrier(0, &b3, ms(300));
    let actions = handler.on_barrier(1, &b3, ms(310));
    assert_eq!(
        actions[0],
        HandlerAction::Abort {
            id: 2,
            reason: AbortReason::Subsumed
        }
    );
    assert!(matches!(&actions[1], HandlerAction::Trigger(t) if t.barrier.id == 3));
    // The end of a channel completes what waited only for it.
    let b4 = barrier(4, CheckpointOptions::at_least_once());
    handler.on_barrier(1, &b4, ms(400));
    assert!(
        matches!(&handler.on_end_of_input(0, ms(410))[..], [HandlerAction::Trigger(t)] if t.barrier.id == 4)
    );
}

#[test]
fn at_least_once_bounds_the_checkpoints_it_tracks() {
    let mut handler = BarrierHandler::new(2);
    let mut aborted = Vec::new();
    for id in 1..=(MAX_TRACKED_CHECKPOINTS as u64 + 3) {
        for action in
            handler.on_barrier(0, &barrier(id, CheckpointOptions::at_least_once()), ms(id))
        {
            if let HandlerAction::Abort { id, reason } = action {
                assert_eq!(reason, AbortReason::TooManyPending);
                aborted.push(id);
            }
        }
    }
    assert_eq!(aborted, vec![1, 2, 3]);
    // The dropped checkpoints' late barriers start nothing.
    assert!(
        handler
            .on_barrier(1, &barrier(2, CheckpointOptions::at_least_once()), ms(900))
            .is_empty()
    );
}

#[test]
fn an_aborted_checkpoint_stops_aligning_and_stays_aborted() {
    let mut handler = BarrierHandler::new(2);
    handler.on_barrier(0, &aligned(1), ms(100));
    handler.abort(1);
    assert!(!handler.is_blocked(0));
    assert!(handler.on_barrier(1, &aligned(1), ms(120)).is_empty());
    let mut restored = BarrierHandler::starting_after(2, 7);
    assert!(restored.on_barrier(0, &aligned(7), ms(120)).is_empty());
    assert!(!restored.is_blocked(0));
}

/// One channel's events in order: barriers of increasing ids, perhaps a
/// cancellation marker instead of a barrier; a channel may end early.
#[derive(Clone, Debug)]
enum Event {
    Record,
    Barrier(u64),
    Cancel(u64),
    End,
}

fn channel_events(checkpoints: u64) -> impl Strategy<Value = Vec<Event>> {
    (
        proptest::collection::vec((0usize..4, any::<bool>()), checkpoints as usize),
        proptest::option::of(0..=checkpoints),
    )
        .prop_map(move |(per_checkpoint, ends_after)| {
            let mut events = Vec::new();
            let delivered = ends_after.unwrap_or(checkpoints);
            for (id, (records, cancelled)) in (1..=delivered).zip(per_checkpoint) {
                events.extend(std::iter::repeat_n(Event::Record, records));
                events.push(if cancelled {
                    Event::Cancel(id)
                } else {
                    Event::Barrier(id)
                });
            }
            if ends_after.is_some() {
                events.push(Event::End);
            }
            events
        })
}

proptest! {
    /// A task reading any interleaving of its channels (never a blocked
    /// one) is never stuck, triggers each checkpoint at most once and in
    /// increasing order, and triggers exactly the checkpoints no channel
    /// cancelled.
    #[test]
    fn alignment_never_deadlocks_and_triggers_each_checkpoint_once(
        channels in proptest::collection::vec(channel_events(6), 1..4),
        choices in proptest::collection::vec(any::<usize>(), 64),
        unaligned in any::<bool>(),
    ) {
        let options = if unaligned { CheckpointOptions::unaligned() } else { CheckpointOptions::aligned() };
        let mut handler = BarrierHandler::new(channels.len());
        let mut positions = vec![0; channels.len()];
        let mut triggered = Vec::new();
        let mut step = 0;
        loop {
            let readable: Vec<usize> = (0..channels.len())
                .filter(|&c| positions[c] < channels[c].len() && !handler.is_blocked(c))
                .collect();
            if readable.is_empty() {
                let stuck: Vec<usize> = (0..channels.len()).filter(|&c| positions[c] < channels[c].len()).collect();
                prop_assert!(stuck.is_empty(), "channels {stuck:?} blocked forever");
                break;
            }
            let channel = readable[choices[step % choices.len()] % readable.len()];
            step += 1;
            let now = ms(step as u64);
            let actions = match &channels[channel][positions[channel]] {
                Event::Record => Vec::new(),
                Event::Barrier(id) => handler.on_barrier(channel, &barrier(*id, options), now),
                Event::Cancel(id) => handler.on_cancel(*id),
                Event::End => handler.on_end_of_input(channel, now),
            };
            positions[channel] += 1;
            for action in actions {
                if let HandlerAction::Trigger(trigger) = action {
                    prop_assert!(triggered.last().is_none_or(|last| *last < trigger.barrier.id));
                    triggered.push(trigger.barrier.id);
                }
            }
        }
        let uncancelled: Vec<u64> = (1..=6)
            .filter(|id| {
                channels
                    .iter()
                    .all(|events| !events.iter().any(|e| matches!(e, Event::Cancel(c) if c == id)))
            })
            .collect();
        // Once every channel ended, nothing delivers barriers any more.
        let all_end_before = |id: u64| channels.iter().all(|events| {
            !events.iter().any(|e| matches!(e, Event::Barrier(b) | Event::Cancel(b) if *b == id))
        });
        let uncancelled: Vec<u64> = uncancelled.into_iter().filter(|id| !all_end_before(*id)).collect();
        if unaligned {
            // A checkpoint may be triggered on its first barrier and
            // cancelled later; every one without a cancellation is triggered.
            prop_assert!(uncancelled.iter().all(|id| triggered.contains(id)));
        } else {
            prop_assert_eq!(triggered, uncancelled);
        }
    }
}

/// A `tracing` subscriber that keeps every span's name, fields and whether
/// it closed.
#[derive(Clone, Default)]
struct SpanRecorder(std::sync::Arc<parking_lot::Mutex<Vec<RecordedSpan>>>);

#[derive(Clone, Debug, Default)]
struct RecordedSpan {
    name: &'static str,
    fields: std::collections::BTreeMap<&'static str, String>,
    closed: bool,
}

struct FieldVisitor<'a>(&'a mut std::collections::BTreeMap<&'static str, String>);

impl tracing::field::Visit for FieldVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
}

impl tracing::Subscriber for SpanRecorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attributes: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut span = RecordedSpan {
            name: attributes.metadata().name(),
            ..RecordedSpan::default()
        };
        attributes.record(&mut FieldVisitor(&mut span.fields));
        let mut spans = self.0.lock();
        spans.push(span);
        tracing::span::Id::from_u64(spans.len() as u64)
    }

    fn record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut spans = self.0.lock();
        values.record(&mut FieldVisitor(
            &mut spans[id.into_u64() as usize - 1].fields,
        ));
    }

    fn try_close(&self, id: tracing::span::Id) -> bool {
        self.0.lock()[id.into_u64() as usize - 1].closed = true;
        true
    }

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn each_alignment_is_a_span_from_the_first_to_the_last_barrier() {
    let recorder = SpanRecorder::default();
    let mut handler = BarrierHandler::new(2);
    tracing::subscriber::with_default(recorder.clone(), || {
        handler.on_barrier(0, &aligned(1), ms(105));
        handler.on_barrier(1, &aligned(1), ms(112));
        // Checkpoint 2's alignment is aborted by checkpoint 3.
        handler.on_barrier(0, &aligned(2), ms(200));
        handler.on_barrier(1, &aligned(3), ms(300));
    });
    let spans = recorder.0.lock().clone();
    let alignments: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "checkpoint_alignment")
        .collect();
    assert_eq!(alignments.len(), 3, "{spans:?}");
    assert_eq!(alignments[0].fields["checkpoint_id"], "1");
    assert_eq!(alignments[0].fields["alignment_ns"], "7000000");
    assert_eq!(alignments[0].fields["unaligned"], "false");
    assert!(alignments[0].closed && alignments[1].closed);
    assert!(!alignments[1].fields.contains_key("alignment_ns"));
    assert!(!alignments[2].closed, "checkpoint 3 is still aligning");
    drop(handler);
}
