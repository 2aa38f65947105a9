//! Timers: semantics, snapshots (isolation, restore, rescaling) and a
//! randomized differential test of firing order against a model.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::collection::vec;
use proptest::prelude::*;

use super::Harness;
use crate::backend::{KeyedStateBackend, handles_for_range};
use crate::codec::encode;
use crate::descriptor::{StateKind, ValueStateDescriptor};
use crate::error::{Result, StateError};
use crate::key_group::{
    KeyGroup, KeyGroupRange, assign_to_key_group, key_group_range_for_operator,
};
use crate::snapshot::{KeyedStateHandle, SnapshotOptions};
use crate::state::KeyedStateBackendExt;
use crate::timers::{FiredTimer, TimeDomain, TimerService};

const MAX_PARALLELISM: u32 = 128;

fn all() -> KeyGroupRange {
    KeyGroupRange::all(MAX_PARALLELISM).expect("valid")
}

fn key_group(key: u64) -> KeyGroup {
    assign_to_key_group(&encode(&key).expect("u64 encodes"), MAX_PARALLELISM).expect("valid")
}

/// A fired timer as the checks record it: (timestamp, key, namespace).
type Fired = (i64, u64, u32);

/// Fires every event-time timer up to `watermark`, recording them.
fn fire_all(
    backend: &mut dyn KeyedStateBackend,
    timers: &mut TimerService<u32>,
    watermark: i64,
) -> Result<Vec<Fired>> {
    let mut fired = Vec::new();
    timers.advance_watermark(backend, watermark, |backend, timer| {
        fired.push((
            timer.timestamp,
            backend.current_key_as::<u64>()?,
            timer.namespace,
        ));
        Ok(())
    })?;
    Ok(fired)
}

/// The order the contract fires timers in: timestamp, key group, then the
/// encoded key (length, bytes) and namespace bytes.
fn model_order(timers: &BTreeSet<Fired>) -> Vec<Fired> {
    let mut ordered: Vec<Fired> = timers.iter().copied().collect();
    ordered.sort_by_key(|&(ts, key, ns)| {
        let encoded = encode(&key).expect("u64 encodes");
        (
            ts,
            key_group(key),
            encoded.len(),
            encoded,
            encode(&ns).expect("u32 encodes"),
        )
    });
    ordered
}

/// Registration, deduplication, deletion, firing order with the timer's
/// key current, timers registered while firing, the two time domains,
/// and errors for misuse.
pub fn timer_semantics(h: &Harness<'_>) {
    let name = h.factory.name();
    let mut backend = h.backend(MAX_PARALLELISM, all());
    let b = &mut *backend;
    let outcome = (|| -> Result<()> {
        let mut timers = TimerService::<u32>::register(b, "t")?;
        assert_eq!(timers.next_timer(b, TimeDomain::EventTime)?, None);
        b.set_key(&1u64)?;
        assert!(timers.register_event_time_timer(b, &0, 30)?);
        assert!(
            !timers.register_event_time_timer(b, &0, 30)?,
            "a duplicate is one timer"
        );
        assert!(
            timers.register_event_time_timer(b, &1, 30)?,
            "another namespace"
        );
        assert!(timers.register_event_time_timer(b, &0, 10)?);
        assert!(timers.register_processing_time_timer(b, &0, 5)?);
        b.set_key(&2u64)?;
        assert!(timers.register_event_time_timer(b, &0, 20)?);
        assert!(timers.register_event_time_timer(b, &0, 40)?);
        assert!(timers.delete_event_time_timer(b, &0, 40)?);
        assert!(!timers.delete_event_time_timer(b, &0, 40)?, "deleted once");
        assert!(
            !timers.delete_event_time_timer(b, &0, 10)?,
            "key 2 has none at 10"
        );
        assert_eq!(timers.next_timer(b, TimeDomain::EventTime)?, Some(10));
        assert_eq!(timers.next_timer(b, TimeDomain::ProcessingTime)?, Some(5));

        // Firing: in time order, the timer's key current; a timer set while
        // firing at or before the watermark fires in the same call.
        let mut fired = Vec::new();
        timers.advance_watermark(b, 25, |b, timer| {
            let key = b.current_key_as::<u64>()?;
            fired.push((timer.timestamp, key));
            if timer.timestamp == 10 {
                // Registered for the current key (1), due at once.
                b.set_key(&3u64)?;
                timers_register(b, 15)?;
            }
            Ok(())
        })?;
        assert_eq!(
            fired,
            vec![(10, 1), (15, 3), (20, 2)],
            "{name}: firing order"
        );
        assert_eq!(timers.current_watermark(), 25);
        assert_eq!(
            timers.advance_watermark(b, 20, |_, _| Ok(()))?,
            0,
            "a watermark behind the current one fires nothing"
        );
        let rest = fire_all(b, &mut timers, i64::MAX)?;
        assert_eq!(rest, vec![(30, 1, 0), (30, 1, 1)]);
        let mut processing = Vec::new();
        timers.advance_processing_time(b, 100, |b, timer: FiredTimer<u32>| {
            assert_eq!(timer.domain, TimeDomain::ProcessingTime);
            processing.push((timer.timestamp, b.current_key_as::<u64>()?));
            Ok(())
        })?;
        assert_eq!(processing, vec![(5, 1)]);
        assert_eq!(timers.next_timer(b, TimeDomain::EventTime)?, None);

        // Negative and extreme timestamps keep their order.
        b.set_key(&4u64)?;
        for ts in [i64::MAX, -5, i64::MIN, 0] {
            timers.register_event_time_timer(b, &0, ts)?;
        }
        let extremes: Vec<i64> = fire_all(b, &mut timers, i64::MAX)?
            .into_iter()
            .map(|f| f.0)
            .collect();
        assert_eq!(extremes, vec![i64::MIN, -5, 0, i64::MAX]);
        Ok(())
    })();
    if let Err(e) = outcome {
        panic!("{name}: timer_semantics: unexpected error: {e}");
    }

    // Misuse: value operations on timers, timer operations on values, no key.
    let mut backend = h.backend(MAX_PARALLELISM, all());
    let b = &mut *backend;
    let timers = TimerService::<u32>::register(b, "t").expect("registers");
    let err = timers.register_event_time_timer(b, &0, 1).err();
    assert!(
        matches!(err, Some(StateError::NoCurrentKey)),
        "{name}: a timer without a current key must fail with NoCurrentKey, got {err:?}"
    );
    let value = b
        .value_state(ValueStateDescriptor::<u64>::new("v"))
        .expect("registers");
    b.set_key(&1u64).expect("key");
    let err = b.timer_add(value.id(), &[], 1).err();
    assert!(
        matches!(err, Some(StateError::StateKindMismatch { .. })),
        "{name}: a timer on a value state must fail, got {err:?}"
    );
    let timer_state = b
        .state_metas()
        .into_iter()
        .position(|m| m.kind == StateKind::Timers)
        .expect("timer states are listed");
    let err = b.get(crate::StateId(timer_state as u32), &[]).err();
    assert!(
        matches!(err, Some(StateError::StateKindMismatch { .. })),
        "{name}: reading a timer state as a value must fail, got {err:?}"
    );
    let err = b
        .value_state(ValueStateDescriptor::<u64>::new("_timer_state/event_t"))
        .err();
    assert!(
        matches!(err, Some(StateError::StateKindMismatch { .. })),
        "{name}: a value state under a timer state's name must fail, got {err:?}"
    );
}

/// Re-registers the service's event timer at `ts` for the current key, in
/// namespace 0 (what an operator's `on_timer` does).
fn timers_register(b: &mut dyn KeyedStateBackend, ts: i64) -> Result<()> {
    let timers = TimerService::<u32>::register(b, "t")?;
    timers.register_event_time_timer(b, &0, ts)?;
    Ok(())
}

/// Sets timers for `keys`: two per key, at key-dependent times, in two
/// namespaces; returns them.
fn set_timers(
    b: &mut dyn KeyedStateBackend,
    timers: &TimerService<u32>,
    keys: impl IntoIterator<Item = u64>,
) -> Result<BTreeSet<Fired>> {
    let mut set = BTreeSet::new();
    for key in keys {
        b.set_key(&key)?;
        for (ts, ns) in [((key % 50) as i64 * 10, 0), ((key % 7) as i64 * 100 + 1, 1)] {
            timers.register_event_time_timer(b, &ns, ts)?;
            set.insert((ts, key, ns));
        }
    }
    Ok(set)
}

/// Timers survive checkpoints: changes after the synchronous phase are
/// not in the snapshot; a restore fires exactly the checkpointed timers in
/// the contract's order; rescaling 1 → 2 → 3 → 1 moves each timer with its
/// key group, and the union fired is unchanged.
pub fn timers_survive_restore_and_rescaling(h: &Harness<'_>) {
    let name = h.factory.name();
    let mut backend = h.backend(MAX_PARALLELISM, all());
    let b = &mut *backend;
    let mut timers = TimerService::<u32>::register(b, "t").expect("registers");
    let expected = set_timers(b, &timers, 0..300).expect("timers set");
    let task = b
        .snapshot(1, &SnapshotOptions::checkpoint(1), Arc::clone(&h.storage))
        .unwrap_or_else(|e| panic!("{name}: synchronous phase failed: {e}"));
    // After the synchronous phase: new timers, deleted ones, fired ones.
    set_timers(b, &timers, 1_000..1_050).expect("timers set");
    b.set_key(&5u64).expect("key");
    timers.delete_event_time_timer(b, &0, 50).expect("deletes");
    fire_all(b, &mut timers, 100).expect("fires");
    let handle = task
        .run()
        .unwrap_or_else(|e| panic!("{name}: asynchronous phase failed: {e}"))
        .handle;
    b.notify_checkpoint_complete(1).expect("notice");

    let mut restored = h
        .restore(MAX_PARALLELISM, all(), vec![handle.clone()])
        .unwrap_or_else(|e| panic!("{name}: restore failed: {e}"));
    let mut timers = TimerService::<u32>::register(&mut *restored, "t").expect("registers");
    let fired = fire_all(&mut *restored, &mut timers, i64::MAX).expect("fires");
    assert_eq!(
        fired,
        model_order(&expected),
        "{name}: the restored timers differ from the checkpointed ones"
    );

    let mut handles = vec![handle];
    for parallelism in [2, 3, 1] {
        let mut union = BTreeSet::new();
        let mut next = Vec::new();
        for index in 0..parallelism {
            let range =
                key_group_range_for_operator(MAX_PARALLELISM, parallelism, index).expect("valid");
            let mut part = h
                .restore(MAX_PARALLELISM, range, handles_for_range(&handles, range))
                .unwrap_or_else(|e| panic!("{name}: restore of {range} failed: {e}"));
            let service = TimerService::<u32>::register(&mut *part, "t").expect("registers");
            next.push(h.checkpoint(&mut *part, 10 + u64::from(parallelism)));
            let mut service = service;
            for timer in fire_all(&mut *part, &mut service, i64::MAX).expect("fires") {
                assert!(
                    range.contains(key_group(timer.1)),
                    "{name}: instance {range} fired a timer of key {} (another key group)",
                    timer.1
                );
                union.insert(timer);
            }
        }
        assert!(
            union == expected,
            "{name}: timers after rescaling to {parallelism} differ ({} vs {})",
            union.len(),
            expected.len()
        );
        handles = next;
    }
}

/// One step of a random timer sequence. Keys u8 (12), namespaces 0..3,
/// timestamps small so that they collide.
#[derive(Clone, Debug)]
enum Op {
    Register(u8, u32, i64),
    Delete(u8, u32, i64),
    /// Advance the watermark by this much; timers firing at an even
    /// timestamp register a follow-up at +3 for their key.
    Advance(i64),
    Next,
    CheckpointAndRestore,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..12, 0u32..3, 0i64..60).prop_map(|(k, n, t)| Op::Register(k, n, t)),
        2 => (0u8..12, 0u32..3, 0i64..60).prop_map(|(k, n, t)| Op::Delete(k, n, t)),
        2 => (0i64..25).prop_map(Op::Advance),
        1 => Just(Op::Next),
        1 => Just(Op::CheckpointAndRestore),
    ]
}

fn run_ops(h: &Harness<'_>, ops: &[Op]) -> std::result::Result<(), String> {
    let err = |e: StateError| e.to_string();
    let mut backend = h.backend(MAX_PARALLELISM, all());
    let mut timers = TimerService::<u32>::register(&mut *backend, "t").map_err(err)?;
    let mut model: BTreeSet<Fired> = BTreeSet::new();
    let mut watermark = -1i64;
    let mut checkpoint = 0;
    for op in ops {
        match *op {
            Op::Register(k, ns, ts) => {
                backend.set_key(&u64::from(k)).map_err(err)?;
                let new = timers
                    .register_event_time_timer(&mut *backend, &ns, ts)
                    .map_err(err)?;
                if new != model.insert((ts, u64::from(k), ns)) {
                    return Err(format!("register {op:?} returned {new}"));
                }
            }
            Op::Delete(k, ns, ts) => {
                backend.set_key(&u64::from(k)).map_err(err)?;
                let existed = timers
                    .delete_event_time_timer(&mut *backend, &ns, ts)
                    .map_err(err)?;
                if existed != model.remove(&(ts, u64::from(k), ns)) {
                    return Err(format!("delete {op:?} returned {existed}"));
                }
            }
            Op::Advance(by) => {
                watermark += by;
                let mut fired = Vec::new();
                timers
                    .advance_watermark(&mut *backend, watermark, |b, timer| {
                        let key = b.current_key_as::<u64>()?;
                        fired.push((timer.timestamp, key, timer.namespace));
                        if timer.timestamp % 2 == 0 {
                            let follow_up = TimerService::<u32>::register(b, "t")?;
                            follow_up.register_event_time_timer(
                                b,
                                &timer.namespace,
                                timer.timestamp + 3,
                            )?;
                        }
                        Ok(())
                    })
                    .map_err(err)?;
                let mut expected = Vec::new();
                loop {
                    let due: BTreeSet<Fired> =
                        model.iter().filter(|t| t.0 <= watermark).copied().collect();
                    let Some(&first) = model_order(&due).first() else {
                        break;
                    };
                    model.remove(&first);
                    expected.push(first);
                    if first.0 % 2 == 0 {
                        model.insert((first.0 + 3, first.1, first.2));
                    }
                }
                if fired != expected {
                    return Err(format!(
                        "watermark {watermark}: fired {fired:?}, the model {expected:?}"
                    ));
                }
            }
            Op::Next => {
                let next = timers
                    .next_timer(&mut *backend, TimeDomain::EventTime)
                    .map_err(err)?;
                let expected = model.iter().map(|t| t.0).min();
                if next != expected {
                    return Err(format!("next timer {next:?}, the model {expected:?}"));
                }
            }
            Op::CheckpointAndRestore => {
                checkpoint += 1;
                let handle: KeyedStateHandle = h.checkpoint(&mut *backend, checkpoint);
                backend = h
                    .restore(MAX_PARALLELISM, all(), vec![handle])
                    .map_err(err)?;
                // The watermark is not part of a snapshot; the next advance
                // brings the new service to the model's.
                timers = TimerService::<u32>::register(&mut *backend, "t").map_err(err)?;
            }
        }
    }
    Ok(())
}

/// Random sequences of registrations, deletions, watermarks (whose timers
/// register follow-ups) and checkpoint-and-restore steps: the backend fires
/// exactly the model's timers in the model's order.
pub fn timer_differential_against_model(h: &Harness<'_>) {
    super::run_property(
        h,
        "timer differential test against the model",
        vec(op(), 1..60),
        |ops| run_ops(h, &ops),
    );
}
