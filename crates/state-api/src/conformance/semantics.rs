//! Semantics of each state kind, isolation, iteration and error cases.

use std::ops::ControlFlow;

use super::Harness;
use super::fixtures::{Average, StandardStates, keys_in_range};
use crate::backend::{KeyedStateBackend, StateId};
use crate::codec::encode;
use crate::descriptor::{
    AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    StateKind, ValueStateDescriptor,
};
use crate::error::{Result, StateError};
use crate::key_group::{KeyGroupRange, assign_to_key_group};
use crate::state::KeyedStateBackendExt;

const MAX_PARALLELISM: u32 = 128;

fn full_backend(h: &Harness<'_>) -> Box<dyn KeyedStateBackend> {
    h.backend(
        MAX_PARALLELISM,
        KeyGroupRange::all(MAX_PARALLELISM).expect("valid"),
    )
}

/// Runs `check`, panicking with the backend and check name on error.
fn run(h: &Harness<'_>, check: &str, body: impl FnOnce(&mut dyn KeyedStateBackend) -> Result<()>) {
    let mut backend = full_backend(h);
    if let Err(e) = body(&mut *backend) {
        panic!("{}: {check}: unexpected error: {e}", h.factory.name());
    }
}

/// Value state: absent reads, defaults, update, overwrite, clear.
pub fn value_state_semantics(h: &Harness<'_>) {
    run(h, "value_state_semantics", |b| {
        let plain = b.value_state(ValueStateDescriptor::<String>::new("plain"))?;
        let counted = b.value_state(ValueStateDescriptor::<u64>::new("counted").with_default(7))?;
        b.set_key(&1u64)?;
        assert_eq!(
            plain.value(b)?,
            None,
            "absent value without default reads None"
        );
        assert_eq!(counted.value(b)?, Some(7), "absent value reads the default");
        plain.update(b, &"x".to_string())?;
        counted.update(b, &8)?;
        assert_eq!(plain.value(b)?.as_deref(), Some("x"));
        assert_eq!(counted.value(b)?, Some(8));
        plain.update(b, &String::new())?;
        assert_eq!(
            plain.value(b)?.as_deref(),
            Some(""),
            "an empty value is a value"
        );
        counted.clear(b)?;
        assert_eq!(
            counted.value(b)?,
            Some(7),
            "cleared value reads the default again"
        );
        counted.clear(b)?; // clearing an absent entry is fine
        Ok(())
    });
}

/// List state: order, add_all, update, empty update clears, binary-safe
/// elements, namespace merge.
pub fn list_state_semantics(h: &Harness<'_>) {
    run(h, "list_state_semantics", |b| {
        let mut list = b.list_state(ListStateDescriptor::<String, u32>::new("list"))?;
        b.set_key("k")?;
        list.set_namespace(&1)?;
        assert!(list.get(b)?.is_empty(), "absent list is empty");
        list.add(b, &"a".into())?;
        list.add(b, &"b,c".into())?;
        list.add(b, &String::new())?;
        list.add_all(b, &["d".into(), "\u{0}\n".into()])?;
        assert_eq!(list.get(b)?, vec!["a", "b,c", "", "d", "\u{0}\n"]);
        list.update(b, &["z".into()])?;
        assert_eq!(list.get(b)?, vec!["z"]);
        list.update(b, &[])?;
        assert!(
            list.get(b)?.is_empty(),
            "updating with an empty list clears"
        );
        assert_eq!(
            b.get(list.id(), &encode(&1u32)?)?,
            None,
            "an empty list is absent"
        );

        list.add(b, &"t".into())?;
        list.set_namespace(&2)?;
        list.add_all(b, &["s1".into(), "s2".into()])?;
        list.set_namespace(&3)?;
        list.add(b, &"s3".into())?;
        list.merge_namespaces(b, &1, &[2, 3, 4])?;
        list.set_namespace(&1)?;
        assert_eq!(
            list.get(b)?,
            vec!["t", "s1", "s2", "s3"],
            "merge appends sources in order"
        );
        for ns in [2, 3] {
            list.set_namespace(&ns)?;
            assert!(
                list.get(b)?.is_empty(),
                "merged source namespace {ns} is cleared"
            );
        }
        list.set_namespace(&9)?;
        list.merge_namespaces(b, &9, &[1])?;
        assert_eq!(list.get(b)?.len(), 4, "merge into an absent target");
        Ok(())
    });
}

/// Map state: put, get, contains, remove, ordered entries, emptiness, clear.
pub fn map_state_semantics(h: &Harness<'_>) {
    run(h, "map_state_semantics", |b| {
        let map = b.map_state(MapStateDescriptor::<u32, String>::new("map"))?;
        b.set_key(&5u64)?;
        assert!(map.is_empty(b)?);
        assert_eq!(map.get(b, &1)?, None);
        for uk in [300u32, 2, 1, 128] {
            map.put(b, &uk, &format!("v{uk}"))?;
        }
        map.put(b, &2, &"two".into())?;
        assert_eq!(map.get(b, &2)?.as_deref(), Some("two"));
        assert!(map.contains(b, &300)?);
        assert!(!map.contains(b, &3)?);
        map.remove(b, &300)?;
        map.remove(b, &999)?; // absent is fine
        let mut entries = map.entries(b)?;
        let encoded_order: Vec<Vec<u8>> = entries
            .iter()
            .map(|(k, _)| encode(k).expect("encodes"))
            .collect();
        let mut sorted = encoded_order.clone();
        sorted.sort();
        assert_eq!(
            encoded_order, sorted,
            "map entries iterate in ascending encoded user-key order"
        );
        entries.sort();
        assert_eq!(
            entries,
            vec![(1, "v1".into()), (2, "two".into()), (128, "v128".into())]
        );
        assert!(!map.is_empty(b)?);
        map.clear(b)?;
        assert!(map.is_empty(b)?, "clear removes every entry");
        assert_eq!(map.get(b, &1)?, None);
        Ok(())
    });
}

/// Reducing state: folds, clears, merges namespaces.
pub fn reducing_state_semantics(h: &Harness<'_>) {
    run(h, "reducing_state_semantics", |b| {
        let mut max = b
            .reducing_state(ReducingStateDescriptor::<i64, u8>::new("max", |a, b| {
                (*a).max(*b)
            }))?;
        b.set_key(&1u64)?;
        max.set_namespace(&0)?;
        assert_eq!(max.get(b)?, None);
        for v in [3, -5, 9, 2] {
            max.add(b, &v)?;
        }
        assert_eq!(max.get(b)?, Some(9));
        max.set_namespace(&1)?;
        max.add(b, &12)?;
        max.merge_namespaces(b, &0, &[1, 2])?;
        max.set_namespace(&0)?;
        assert_eq!(
            max.get(b)?,
            Some(12),
            "merge folds source values into the target"
        );
        max.set_namespace(&1)?;
        assert_eq!(max.get(b)?, None, "merged source is cleared");
        max.set_namespace(&0)?;
        max.clear(b)?;
        assert_eq!(max.get(b)?, None);
        Ok(())
    });
}

/// Aggregating state: accumulates, reads results, merges namespaces.
pub fn aggregating_state_semantics(h: &Harness<'_>) {
    run(h, "aggregating_state_semantics", |b| {
        let mut avg = b.aggregating_state(AggregatingStateDescriptor::<Average, u8>::new(
            "avg", Average,
        ))?;
        b.set_key(&1u64)?;
        avg.set_namespace(&0)?;
        assert_eq!(avg.get(b)?, None, "nothing added reads None");
        avg.add(b, &2)?;
        avg.add(b, &4)?;
        assert_eq!(avg.get(b)?, Some(3.0));
        avg.set_namespace(&1)?;
        avg.add(b, &12)?;
        avg.merge_namespaces(b, &0, &[1])?;
        avg.set_namespace(&0)?;
        assert_eq!(avg.get(b)?, Some(6.0), "merged accumulators (2+4+12)/3");
        avg.clear(b)?;
        assert_eq!(avg.get(b)?, None);
        Ok(())
    });
}

/// Different keys and namespaces never see each other's entries, including
/// keys and namespaces whose byte concatenations coincide.
pub fn key_and_namespace_isolation(h: &Harness<'_>) {
    run(h, "key_and_namespace_isolation", |b| {
        let mut states = StandardStates::register(b);
        let keys: Vec<u64> = (0..40).collect();
        for &k in &keys {
            states.populate(b, k);
        }
        for &k in &keys {
            b.set_key(&k)?;
            assert_eq!(states.value.value(b)?, Some(k * 10), "value of key {k}");
            assert_eq!(states.list.get(b)?, vec![format!("a{k}"), format!("b,{k}")]);
            assert_eq!(states.map.entries(b)?.len() as u64, k % 4);
            assert_eq!(states.sum.get(b)?, Some(k + 1));
            for window in [k % 3, k % 3 + 10] {
                states.windowed.set_namespace(&window)?;
                assert_eq!(states.windowed.value(b)?, Some(k + window));
            }
            states.windowed.set_namespace(&(k % 3 + 1))?;
            assert_eq!(
                states.windowed.value(b)?,
                None,
                "other namespace of key {k} is empty"
            );
        }
        // Raw bytes whose concatenation key ++ namespace is equal: "ab"+"" vs "a"+"b".
        let id = states.value.id();
        b.set_current_key(b"ab")?;
        b.put(id, b"", &encode(&1u64)?)?;
        b.set_current_key(b"a")?;
        assert_eq!(b.get(id, b"b")?, None, "(a, b) must not see (ab, '')");
        b.put(id, b"b", &encode(&2u64)?)?;
        b.set_current_key(b"ab")?;
        assert_eq!(b.get(id, b"")?, Some(&encode(&1u64)?[..]));
        // The same key in another state is another entry.
        b.set_key(&0u64)?;
        states.value.clear(b)?;
        assert_eq!(
            states.sum.get(b)?,
            Some(1),
            "clearing one state leaves the others"
        );
        Ok(())
    });
}

/// Key iteration per namespace, iteration of all (key, namespace) pairs, and
/// apply-to-all-keys with writes inside the callback.
pub fn iteration_and_apply_to_all_keys(h: &Harness<'_>) {
    run(h, "iteration_and_apply_to_all_keys", |b| {
        let mut states = StandardStates::register(b);
        for k in 0..30u64 {
            states.populate(b, k);
        }
        let mut in_window_0: Vec<u64> = b.keys(states.windowed.id(), &0u64)?;
        in_window_0.sort_unstable();
        let expected: Vec<u64> = (0..30).filter(|k| k % 3 == 0).collect();
        assert_eq!(
            in_window_0, expected,
            "keys() lists exactly the keys with that namespace"
        );

        let mut pairs = 0;
        b.for_each_key_and_namespace(states.windowed.id(), &mut |_, _| {
            pairs += 1;
            Ok(ControlFlow::Continue(()))
        })?;
        assert_eq!(pairs, 60, "two windows per key");

        let mut stopped_after = 0;
        b.for_each_key_and_namespace(states.value.id(), &mut |_, _| {
            stopped_after += 1;
            Ok(ControlFlow::Break(()))
        })?;
        assert_eq!(stopped_after, 1, "Break stops iteration");

        b.set_key(&7u64)?;
        let windowed = &mut states.windowed;
        windowed.set_namespace(&10)?;
        let mut visited = 0;
        b.apply_to_all_keys(windowed.id(), &10u64, |b| {
            visited += 1;
            windowed.clear(b)
        })?;
        assert_eq!(visited, 10);
        assert!(
            b.keys::<u64, _>(windowed.id(), &10u64)?.is_empty(),
            "all cleared inside apply_to_all_keys"
        );
        assert_eq!(
            b.keys::<u64, _>(windowed.id(), &11u64)?.len(),
            10,
            "other namespace untouched"
        );
        assert_eq!(
            b.current_key_as::<u64>()?,
            7,
            "current key restored afterwards"
        );
        Ok(())
    });
}

/// Registration: re-registering returns the same state; another kind or
/// other types is an error naming the state.
pub fn registration_rules(h: &Harness<'_>) {
    run(h, "registration_rules", |b| {
        let first = b.value_state(ValueStateDescriptor::<u64>::new("s"))?;
        let again = b.value_state(ValueStateDescriptor::<u64>::new("s"))?;
        assert_eq!(
            first.id(),
            again.id(),
            "same descriptor gives the same state"
        );
        b.set_key(&1u64)?;
        first.update(b, &3)?;
        assert_eq!(again.value(b)?, Some(3));

        let err = b.list_state(ListStateDescriptor::<u64>::new("s")).err();
        assert!(
            matches!(&err, Some(StateError::StateKindMismatch { state, .. }) if state == "s"),
            "another kind under the same name must fail, got {err:?}"
        );
        let err = b
            .value_state(ValueStateDescriptor::<String>::new("s"))
            .err();
        assert!(
            matches!(&err, Some(StateError::StateTypeMismatch { state, .. }) if state == "s"),
            "another value type must fail, got {err:?}"
        );
        let err = b
            .value_state(ValueStateDescriptor::<u64, u32>::new("s"))
            .err();
        assert!(
            matches!(
                &err,
                Some(StateError::StateTypeMismatch {
                    what: "namespace",
                    ..
                })
            ),
            "another namespace type must fail, got {err:?}"
        );
        let err = b
            .map_state(MapStateDescriptor::<u64, u64>::new("m"))
            .and_then(|_| b.map_state(MapStateDescriptor::<u32, u64>::new("m")));
        assert!(
            matches!(
                &err,
                Err(StateError::StateTypeMismatch {
                    what: "user key",
                    ..
                })
            ),
            "another user key type must fail, got {:?}",
            err.err()
        );
        let metas = b.state_metas();
        assert!(
            metas
                .iter()
                .any(|m| m.name == "s" && m.kind == StateKind::Value)
        );
        assert!(
            metas
                .iter()
                .any(|m| m.name == "m" && m.kind == StateKind::Map)
        );
        Ok(())
    });
}

/// Misuse of the raw contract fails with the documented error.
pub fn misuse_is_an_error(h: &Harness<'_>) {
    let name = h.factory.name().to_string();
    let range = KeyGroupRange::new(0, 64).expect("valid");
    let mut b = h.backend(MAX_PARALLELISM, range);
    let b = &mut *b;
    let list = b
        .list_state(ListStateDescriptor::<u64>::new("l"))
        .unwrap_or_else(|e| panic!("{name}: register: {e}"));
    let value = b
        .value_state(ValueStateDescriptor::<u64>::new("v"))
        .unwrap_or_else(|e| panic!("{name}: register: {e}"));
    assert!(
        matches!(value.value(b), Err(StateError::NoCurrentKey)),
        "{name}: access without a current key must be NoCurrentKey"
    );
    let outside = keys_in_range(
        KeyGroupRange::new(64, 128).expect("valid"),
        MAX_PARALLELISM,
        0,
        1,
    )[0];
    let encoded = encode(&outside).expect("encodes");
    let kg = assign_to_key_group(&encoded, MAX_PARALLELISM).expect("valid");
    assert!(
        matches!(b.set_current_key(&encoded), Err(StateError::KeyGroupOutOfRange { key_group, .. }) if key_group == kg),
        "{name}: a key of key group {kg} outside {range} must be rejected"
    );
    let inside = keys_in_range(range, MAX_PARALLELISM, 0, 1)[0];
    b.set_key(&inside).unwrap_or_else(|e| panic!("{name}: {e}"));
    let kind_errors: [(&str, Result<()>); 6] = [
        ("map_put on a list", b.map_put(list.id(), b"", b"k", b"v")),
        ("accumulate on a list", b.accumulate(list.id(), b"", &[1])),
        (
            "list_append on a value",
            b.list_append(value.id(), b"", &[1, 1]),
        ),
        (
            "merge_namespaces on a value",
            b.merge_namespaces(value.id(), b"", &[&b"x"[..]]),
        ),
        (
            "map_get on a value",
            b.map_get(value.id(), b"", b"k").map(|_| ()),
        ),
        ("get on a map", {
            let map = b
                .map_state(MapStateDescriptor::<u8, u8>::new("m"))
                .unwrap_or_else(|e| panic!("{name}: register: {e}"));
            b.get(map.id(), b"").map(|_| ())
        }),
    ];
    for (what, outcome) in kind_errors {
        assert!(
            matches!(outcome, Err(StateError::StateKindMismatch { .. })),
            "{name}: {what} must be StateKindMismatch, got {outcome:?}"
        );
    }
    let unknown = StateId(9_999);
    assert!(
        matches!(b.get(unknown, b""), Err(StateError::UnknownState { .. })),
        "{name}: an unknown state id must be UnknownState"
    );
    // Bytes that are not a u64 stored under a u64 state: reads fail cleanly.
    b.put(value.id(), b"", &[0xff; 11])
        .unwrap_or_else(|e| panic!("{name}: raw put: {e}"));
    assert!(
        matches!(value.value(b), Err(StateError::Codec { .. })),
        "{name}: undecodable bytes must be a codec error"
    );
}
