//! Unit tests of every backend operation on raw bytes.

use std::ops::ControlFlow;
use std::sync::Arc;

use state_api::codec::write_len_prefixed;
use state_api::descriptor::StateFunction;
use state_api::key_group::assign_to_key_group;
use state_api::{KeyGroupRange, KeyedStateBackend, StateError, StateId, StateKind, StateMeta};

use super::*;

const MAX_P: u32 = 128;

fn backend() -> HeapKeyedStateBackend {
    HeapKeyedStateBackend::new("test", MAX_P, KeyGroupRange::all(MAX_P).unwrap()).unwrap()
}

/// A fold for tests: concatenation, failing on inputs that start with 0xEE.
struct Concat;

const POISON: u8 = 0xEE;

fn poisoned(bytes: &[u8]) -> Result<()> {
    if bytes.first() == Some(&POISON) {
        return Err(StateError::NotSupported {
            operation: "poisoned input",
            backend: "test",
        });
    }
    Ok(())
}

impl StateFunction for Concat {
    fn add(&self, accumulator: Option<&[u8]>, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        poisoned(input)?;
        out.extend_from_slice(accumulator.unwrap_or_default());
        out.extend_from_slice(input);
        Ok(())
    }

    fn merge(&self, a: &[u8], b: &[u8], out: &mut Vec<u8>) -> Result<()> {
        poisoned(a)?;
        poisoned(b)?;
        out.extend_from_slice(a);
        out.extend_from_slice(b);
        Ok(())
    }
}

fn meta(name: &str, kind: StateKind) -> StateMeta {
    StateMeta {
        name: name.into(),
        kind,
        namespace_type: "ns".into(),
        value_type: "v".into(),
        user_key_type: (kind == StateKind::Map).then(|| "uk".into()),
        ttl: None,
    }
}

fn registration(name: &str, kind: StateKind) -> StateRegistration {
    StateRegistration {
        meta: meta(name, kind),
        function: kind
            .needs_function()
            .then(|| Arc::new(Concat) as Arc<dyn StateFunction>),
        ttl: None,
    }
}

fn register(b: &mut HeapKeyedStateBackend, name: &str, kind: StateKind) -> StateId {
    b.register_state(registration(name, kind)).unwrap()
}

const KINDS: [StateKind; 5] = [
    StateKind::Value,
    StateKind::List,
    StateKind::Map,
    StateKind::Reducing,
    StateKind::Aggregating,
];

/// The list encoding of `elements`.
fn list(elements: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for element in elements {
        write_len_prefixed(&mut out, element);
    }
    out
}

fn get(b: &mut HeapKeyedStateBackend, id: StateId, ns: &[u8]) -> Option<Vec<u8>> {
    b.get(id, ns).unwrap().map(<[u8]>::to_vec)
}

/// Every (key, namespace) of `id`, sorted.
fn pairs(b: &mut HeapKeyedStateBackend, id: StateId) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    b.for_each_key_and_namespace(id, &mut |k, ns| {
        out.push((k.to_vec(), ns.to_vec()));
        Ok(ControlFlow::Continue(()))
    })
    .unwrap();
    out.sort();
    out
}

fn map_entries(b: &mut HeapKeyedStateBackend, id: StateId, ns: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    b.map_for_each(id, ns, &mut |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        Ok(ControlFlow::Continue(()))
    })
    .unwrap();
    out
}

/// Runs `op` for every operation of the contract on `id`, returning each
/// outcome with the operation's name.
fn every_operation(
    b: &mut HeapKeyedStateBackend,
    id: StateId,
    kind: StateKind,
) -> Vec<(&'static str, Result<()>)> {
    // Inputs valid for the kind, so only the kind (or key, or id) can fail.
    let value: &[u8] = if kind == StateKind::List {
        &[1, 7]
    } else {
        b"v"
    };
    vec![
        ("get", b.get(id, b"ns").map(|_| ())),
        ("put", b.put(id, b"ns", value)),
        ("clear", b.clear(id, b"ns")),
        ("list_append", b.list_append(id, b"ns", &[1, 7])),
        ("accumulate", b.accumulate(id, b"ns", b"x")),
        (
            "merge_namespaces",
            b.merge_namespaces(id, b"ns", &[b"other"]),
        ),
        ("map_get", b.map_get(id, b"ns", b"uk").map(|_| ())),
        ("map_put", b.map_put(id, b"ns", b"uk", b"uv")),
        ("map_remove", b.map_remove(id, b"ns", b"uk")),
        (
            "map_for_each",
            b.map_for_each(id, b"ns", &mut |_, _| Ok(ControlFlow::Continue(()))),
        ),
    ]
}

fn allowed(operation: &str, kind: StateKind) -> bool {
    use StateKind::*;
    match operation {
        "get" | "put" => kind != Map,
        "clear" => true,
        "list_append" => kind == List,
        "accumulate" => matches!(kind, Reducing | Aggregating),
        "merge_namespaces" => matches!(kind, List | Reducing | Aggregating),
        _ => kind == Map,
    }
}

#[test]
fn value_state_reads_writes_and_clears() {
    let mut b = backend();
    let id = register(&mut b, "v", StateKind::Value);
    b.set_current_key(b"k1").unwrap();
    assert_eq!(get(&mut b, id, b""), None);
    b.put(id, b"", b"one").unwrap();
    assert_eq!(get(&mut b, id, b""), Some(b"one".to_vec()));
    b.put(id, b"", &[9; 100]).unwrap();
    assert_eq!(get(&mut b, id, b""), Some(vec![9; 100]), "large values");
    b.put(id, b"", b"").unwrap();
    assert_eq!(
        get(&mut b, id, b""),
        Some(Vec::new()),
        "an empty value is a value"
    );
    b.set_current_key(b"k2").unwrap();
    assert_eq!(get(&mut b, id, b""), None, "other key");
    b.set_current_key(b"k1").unwrap();
    b.clear(id, b"").unwrap();
    assert_eq!(get(&mut b, id, b""), None);
    b.clear(id, b"").unwrap(); // clearing an absent entry is fine
    assert_eq!(b.num_entries(), 0);
}

#[test]
fn every_operation_needs_a_current_key() {
    let mut b = backend();
    for kind in KINDS {
        let id = register(&mut b, &format!("{kind:?}"), kind);
        for (operation, outcome) in every_operation(&mut b, id, kind) {
            if allowed(operation, kind) {
                assert!(
                    matches!(outcome, Err(StateError::NoCurrentKey)),
                    "{operation} on {kind:?}: {outcome:?}"
                );
            }
        }
    }
    assert_eq!(b.current_key(), None);
    assert_eq!(b.current_key_group(), None);
}

#[test]
fn unknown_state_ids_are_rejected() {
    let mut b = backend();
    register(&mut b, "v", StateKind::Value);
    b.set_current_key(b"k").unwrap();
    for (operation, outcome) in every_operation(&mut b, StateId(7), StateKind::Value) {
        assert!(
            matches!(outcome, Err(StateError::UnknownState { state_id: 7 })),
            "{operation}: {outcome:?}"
        );
    }
    let outcome =
        b.for_each_key_and_namespace(StateId(7), &mut |_, _| Ok(ControlFlow::Continue(())));
    assert!(matches!(
        outcome,
        Err(StateError::UnknownState { state_id: 7 })
    ));
}

#[test]
fn operations_check_the_state_kind() {
    let mut b = backend();
    b.set_current_key(b"k").unwrap();
    for kind in KINDS {
        let name = format!("{kind:?}-state");
        let id = register(&mut b, &name, kind);
        for (operation, outcome) in every_operation(&mut b, id, kind) {
            if allowed(operation, kind) {
                assert!(outcome.is_ok(), "{operation} on {kind:?}: {outcome:?}");
            } else {
                assert!(
                    matches!(&outcome, Err(StateError::StateKindMismatch { state, registered, .. })
                        if *state == name && *registered == kind),
                    "{operation} on {kind:?} must be a kind mismatch: {outcome:?}"
                );
            }
        }
    }
}

#[test]
fn keys_outside_the_range_are_rejected() {
    let range = KeyGroupRange::new(0, 64).unwrap();
    let mut b = HeapKeyedStateBackend::new("half", MAX_P, range).unwrap();
    let kg_of = |k: &[u8]| assign_to_key_group(k, MAX_P).unwrap();
    let inside = (0u32..)
        .map(u32::to_le_bytes)
        .find(|k| kg_of(k) < 64)
        .unwrap();
    let outside = (0u32..)
        .map(u32::to_le_bytes)
        .find(|k| kg_of(k) >= 64)
        .unwrap();
    b.set_current_key(&inside).unwrap();
    assert_eq!(b.current_key(), Some(&inside[..]));
    assert_eq!(b.current_key_group(), Some(kg_of(&inside)));
    let err = b.set_current_key(&outside).unwrap_err();
    assert!(
        matches!(err, StateError::KeyGroupOutOfRange { key_group, range: r } if key_group == kg_of(&outside) && r == range),
        "{err}"
    );
    assert_eq!(
        b.current_key(),
        Some(&inside[..]),
        "the previous key stays current"
    );

    assert!(HeapKeyedStateBackend::new("x", 0, KeyGroupRange::EMPTY).is_err());
    assert!(HeapKeyedStateBackend::new("x", 64, KeyGroupRange::all(MAX_P).unwrap()).is_err());
    let mut empty = HeapKeyedStateBackend::new("x", 8, KeyGroupRange::EMPTY).unwrap();
    assert!(
        empty.set_current_key(b"any").is_err(),
        "an empty range owns no key"
    );
}

#[test]
fn keys_and_namespaces_with_equal_concatenations_are_distinct() {
    let mut b = backend();
    let id = register(&mut b, "v", StateKind::Value);
    b.set_current_key(b"ab").unwrap();
    b.put(id, b"", b"1").unwrap();
    b.set_current_key(b"a").unwrap();
    assert_eq!(get(&mut b, id, b"b"), None);
    b.put(id, b"b", b"2").unwrap();
    b.set_current_key(b"ab").unwrap();
    assert_eq!(get(&mut b, id, b""), Some(b"1".to_vec()));
    assert_eq!(
        pairs(&mut b, id),
        vec![(b"a".to_vec(), b"b".to_vec()), (b"ab".to_vec(), Vec::new())]
    );
}

#[test]
fn list_state_appends_replaces_and_validates() {
    let mut b = backend();
    let id = register(&mut b, "l", StateKind::List);
    b.set_current_key(b"k").unwrap();
    b.list_append(id, b"w", &list(&[b"a"])).unwrap();
    b.list_append(id, b"w", &list(&[b"", &[0; 40]])).unwrap();
    assert_eq!(get(&mut b, id, b"w"), Some(list(&[b"a", b"", &[0; 40]])));
    b.put(id, b"w", &list(&[b"z"])).unwrap();
    assert_eq!(get(&mut b, id, b"w"), Some(list(&[b"z"])));

    // Malformed lists are rejected and change nothing.
    let err = b.put(id, b"w", &[5, 1]).unwrap_err();
    assert!(matches!(err, StateError::Codec { .. }), "{err}");
    let err = b.list_append(id, b"w", &[0x80]).unwrap_err();
    assert!(matches!(err, StateError::Codec { .. }), "{err}");
    assert_eq!(get(&mut b, id, b"w"), Some(list(&[b"z"])));

    b.put(id, b"w", &[]).unwrap();
    assert_eq!(get(&mut b, id, b"w"), None, "an empty list clears");
    b.list_append(id, b"w", &[]).unwrap();
    assert_eq!(
        get(&mut b, id, b"w"),
        None,
        "appending nothing creates nothing"
    );
    assert!(pairs(&mut b, id).is_empty());
}

#[test]
fn accumulate_folds_and_failures_change_nothing() {
    let mut b = backend();
    for kind in [StateKind::Reducing, StateKind::Aggregating] {
        let id = register(&mut b, &format!("{kind:?}"), kind);
        b.set_current_key(b"k").unwrap();
        b.accumulate(id, b"", b"a").unwrap();
        b.accumulate(id, b"", b"b").unwrap();
        b.accumulate(id, b"", &[b'c'; 30]).unwrap();
        let mut expected = b"ab".to_vec();
        expected.extend_from_slice(&[b'c'; 30]);
        assert_eq!(get(&mut b, id, b""), Some(expected.clone()));
        assert!(b.accumulate(id, b"", &[POISON]).is_err());
        assert_eq!(
            get(&mut b, id, b""),
            Some(expected),
            "{kind:?}: a failed fold changes nothing"
        );
        assert!(b.accumulate(id, b"fresh", &[POISON]).is_err());
        assert_eq!(
            get(&mut b, id, b"fresh"),
            None,
            "{kind:?}: a failed first fold stores nothing"
        );
    }
}

#[test]
fn merging_lists_concatenates_target_then_sources() {
    let mut b = backend();
    let id = register(&mut b, "l", StateKind::List);
    b.set_current_key(b"k").unwrap();
    for (ns, element) in [(&b"t"[..], &b"t0"[..]), (b"s1", b"a"), (b"s2", b"b")] {
        b.list_append(id, ns, &list(&[element])).unwrap();
    }
    b.merge_namespaces(id, b"t", &[b"s1", b"absent", b"s2", b"s1"])
        .unwrap();
    assert_eq!(
        get(&mut b, id, b"t"),
        Some(list(&[b"t0", b"a", b"b"])),
        "a repeated source merges once"
    );
    assert_eq!(get(&mut b, id, b"s1"), None);
    assert_eq!(get(&mut b, id, b"s2"), None);

    // The target among the sources is not duplicated.
    b.list_append(id, b"s3", &list(&[b"c"])).unwrap();
    b.merge_namespaces(id, b"t", &[b"t", b"s3"]).unwrap();
    assert_eq!(
        get(&mut b, id, b"t"),
        Some(list(&[b"t0", b"a", b"b", b"c"]))
    );

    // Into an absent target; from absent sources only.
    b.merge_namespaces(id, b"new", &[b"t"]).unwrap();
    assert_eq!(
        get(&mut b, id, b"new"),
        Some(list(&[b"t0", b"a", b"b", b"c"]))
    );
    b.merge_namespaces(id, b"none", &[b"t", b"gone"]).unwrap();
    b.merge_namespaces(id, b"new", &[]).unwrap();
    assert_eq!(
        get(&mut b, id, b"none"),
        None,
        "nothing to merge creates nothing"
    );
    assert_eq!(pairs(&mut b, id), vec![(b"k".to_vec(), b"new".to_vec())]);
}

#[test]
fn merging_folds_and_a_failing_merge_changes_nothing() {
    let mut b = backend();
    let id = register(&mut b, "r", StateKind::Reducing);
    b.set_current_key(b"k").unwrap();
    b.accumulate(id, b"t", b"T").unwrap();
    b.accumulate(id, b"a", b"A").unwrap();
    b.accumulate(id, b"b", b"B").unwrap();
    b.merge_namespaces(id, b"t", &[b"a", b"b"]).unwrap();
    assert_eq!(get(&mut b, id, b"t"), Some(b"TAB".to_vec()));
    assert_eq!(get(&mut b, id, b"a"), None);

    b.accumulate(id, b"c", b"C").unwrap();
    b.put(id, b"bad", &[POISON]).unwrap();
    let err = b.merge_namespaces(id, b"t", &[b"c", b"bad"]);
    assert!(err.is_err());
    assert_eq!(
        get(&mut b, id, b"t"),
        Some(b"TAB".to_vec()),
        "target unchanged"
    );
    assert_eq!(
        get(&mut b, id, b"c"),
        Some(b"C".to_vec()),
        "sources unchanged"
    );
    assert_eq!(get(&mut b, id, b"bad"), Some(vec![POISON]));
}

#[test]
fn map_state_iterates_in_byte_order_and_drops_empty_maps() {
    let mut b = backend();
    let id = register(&mut b, "m", StateKind::Map);
    b.set_current_key(b"k").unwrap();
    assert_eq!(b.map_get(id, b"", b"x").unwrap(), None);
    // Enough entries to switch representations on the way up and down.
    let user_keys: Vec<Vec<u8>> = (0..80u32)
        .map(|i| (i * 37 % 80).to_be_bytes()[2..].to_vec())
        .collect();
    for (i, uk) in user_keys.iter().enumerate() {
        b.map_put(id, b"", uk, &[i as u8; 3]).unwrap();
    }
    b.map_put(id, b"", &user_keys[0], b"replaced").unwrap();
    assert_eq!(
        b.map_get(id, b"", &user_keys[0]).unwrap(),
        Some(&b"replaced"[..])
    );
    let entries = map_entries(&mut b, id, b"");
    let mut sorted_keys = user_keys.clone();
    sorted_keys.sort();
    assert_eq!(
        entries.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        sorted_keys
    );

    let mut seen = 0;
    b.map_for_each(id, b"", &mut |_, _| {
        seen += 1;
        Ok(if seen == 3 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })
    .unwrap();
    assert_eq!(seen, 3, "Break stops the iteration");

    b.map_remove(id, b"", b"not there").unwrap();
    b.map_remove(id, b"other-ns", b"x").unwrap();
    for uk in &user_keys {
        b.map_remove(id, b"", uk).unwrap();
    }
    assert!(map_entries(&mut b, id, b"").is_empty());
    assert!(
        pairs(&mut b, id).is_empty(),
        "a map without entries is absent"
    );
    assert_eq!(b.num_entries(), 0);

    b.map_put(id, b"ns", b"a", b"1").unwrap();
    b.clear(id, b"ns").unwrap();
    assert_eq!(
        b.map_get(id, b"ns", b"a").unwrap(),
        None,
        "clear drops the whole map"
    );
}

#[test]
fn iteration_splits_keys_and_namespaces_and_stops_on_break() {
    let mut b = backend();
    let id = register(&mut b, "v", StateKind::Value);
    let mut expected = Vec::new();
    for i in 0..50u8 {
        // Short and long keys and namespaces (past the inline size).
        let key = vec![i; 1 + usize::from(i) % 40];
        let ns = vec![i ^ 0x55; usize::from(i) % 3 * 20];
        b.set_current_key(&key).unwrap();
        b.put(id, &ns, &[i]).unwrap();
        expected.push((key, ns));
    }
    expected.sort();
    assert_eq!(pairs(&mut b, id), expected);
    let mut visited = 0;
    b.for_each_key_and_namespace(id, &mut |_, _| {
        visited += 1;
        Ok(ControlFlow::Break(()))
    })
    .unwrap();
    assert_eq!(visited, 1);
    let err = b
        .for_each_key_and_namespace(id, &mut |_, _| Err(StateError::NoCurrentKey))
        .unwrap_err();
    assert!(
        matches!(err, StateError::NoCurrentKey),
        "visitor errors propagate"
    );
}

#[test]
fn registration_returns_the_same_state_and_checks_types() {
    let mut b = backend();
    let v = register(&mut b, "s", StateKind::Value);
    assert_eq!(register(&mut b, "s", StateKind::Value), v);
    let err = b
        .register_state(registration("s", StateKind::List))
        .unwrap_err();
    assert!(
        matches!(err, StateError::StateKindMismatch { ref state, .. } if state == "s"),
        "{err}"
    );
    let mut other_type = registration("s", StateKind::Value);
    other_type.meta.value_type = "other".into();
    let err = b.register_state(other_type).unwrap_err();
    assert!(
        matches!(err, StateError::StateTypeMismatch { what: "value", .. }),
        "{err}"
    );

    let err = b
        .register_state(registration("", StateKind::Value))
        .unwrap_err();
    assert!(matches!(err, StateError::Config { .. }), "{err}");
    let mut no_function = registration("r", StateKind::Reducing);
    no_function.function = None;
    assert!(matches!(
        b.register_state(no_function),
        Err(StateError::Config { .. })
    ));

    let metas = b.state_metas();
    assert_eq!(
        metas,
        vec![meta("s", StateKind::Value)],
        "failed registrations add nothing"
    );
}

/// A fold that ignores the accumulator: lets a test see which function runs.
struct Last;

impl StateFunction for Last {
    fn add(&self, _: Option<&[u8]>, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(input);
        Ok(())
    }

    fn merge(&self, _: &[u8], b: &[u8], out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(b);
        Ok(())
    }
}

#[test]
fn re_registration_replaces_the_fold_function() {
    let mut b = backend();
    let id = register(&mut b, "r", StateKind::Reducing);
    b.set_current_key(b"k").unwrap();
    b.accumulate(id, b"", b"a").unwrap();
    b.accumulate(id, b"", b"b").unwrap();
    assert_eq!(get(&mut b, id, b""), Some(b"ab".to_vec()));
    let again = b
        .register_state(StateRegistration {
            meta: meta("r", StateKind::Reducing),
            function: Some(Arc::new(Last)),
            ttl: None,
        })
        .unwrap();
    assert_eq!(again, id);
    b.accumulate(id, b"", b"c").unwrap();
    assert_eq!(
        get(&mut b, id, b""),
        Some(b"c".to_vec()),
        "the latest function folds"
    );
}

#[test]
fn states_are_independent() {
    let mut b = backend();
    let ids: Vec<StateId> = KINDS
        .iter()
        .map(|kind| register(&mut b, &format!("{kind:?}"), *kind))
        .collect();
    b.set_current_key(b"k").unwrap();
    b.put(ids[0], b"", b"v").unwrap();
    b.list_append(ids[1], b"", &list(&[b"l"])).unwrap();
    b.map_put(ids[2], b"", b"uk", b"uv").unwrap();
    b.accumulate(ids[3], b"", b"r").unwrap();
    b.accumulate(ids[4], b"", b"a").unwrap();
    assert_eq!(b.num_entries(), 5);
    b.clear(ids[0], b"").unwrap();
    assert_eq!(get(&mut b, ids[3], b""), Some(b"r".to_vec()));
    assert_eq!(b.map_get(ids[2], b"", b"uk").unwrap(), Some(&b"uv"[..]));
    assert_eq!(b.num_entries(), 4);
    assert_eq!(b.backend_name(), "heap");
    assert_eq!(b.max_parallelism(), MAX_P);
    assert_eq!(b.key_group_range(), KeyGroupRange::all(MAX_P).unwrap());
}

#[test]
fn many_keys_over_many_key_groups() {
    let mut b = backend();
    let id = register(&mut b, "v", StateKind::Value);
    for i in 0..5_000u32 {
        b.set_current_key(&i.to_le_bytes()).unwrap();
        b.put(id, b"", &i.to_be_bytes()).unwrap();
    }
    for i in (0..5_000u32).step_by(7) {
        b.set_current_key(&i.to_le_bytes()).unwrap();
        assert_eq!(get(&mut b, id, b""), Some(i.to_be_bytes().to_vec()));
        b.clear(id, b"").unwrap();
    }
    assert_eq!(b.num_entries(), 5_000 - 5_000usize.div_ceil(7));
}

/// The page addresses of every key group of the bytes state `id`.
fn page_ids(b: &HeapKeyedStateBackend, id: StateId) -> Vec<Vec<usize>> {
    match &b.states().get(id).unwrap().data {
        Table::Bytes(table) => (0..b.key_group_range().len())
            .map(|index| table.page_ids(index))
            .collect(),
        Table::Map(_) | Table::Timers(_) => panic!("not a bytes state"),
    }
}

#[test]
fn a_write_after_a_snapshot_copies_one_page_of_one_key_group() {
    use crate::table::PAGE_LIMIT;
    use state_api::{BackendContext, SnapshotOptions};

    let storage =
        Arc::new(state_storage::ObjectStoreCheckpointStorage::in_memory("pages").unwrap());
    let mut b = backend();
    let id = register(&mut b, "v", StateKind::Value);
    for i in 0..2_000u32 {
        b.set_current_key(&i.to_le_bytes()).unwrap();
        b.put(id, b"", b"spread").unwrap();
    }
    // Many namespaces of one key: one key group of several pages.
    let hot_namespaces = 4 * PAGE_LIMIT as u32;
    b.set_current_key(b"hot").unwrap();
    for ns in 0..hot_namespaces {
        b.put(id, &ns.to_be_bytes(), b"v").unwrap();
    }
    let hot = b.current_key_group().unwrap() as usize;
    let before = page_ids(&b, id);
    assert!(before[hot].len() >= 4, "{} pages", before[hot].len());

    let task = b
        .snapshot(1, &SnapshotOptions::checkpoint(1), storage.clone())
        .unwrap();
    // Reads, absent keys and no-op clears copy nothing.
    assert_eq!(get(&mut b, id, &7u32.to_be_bytes()), Some(b"v".to_vec()));
    b.clear(id, b"absent").unwrap();
    b.map_remove(id, b"", b"uk").unwrap_err(); // wrong kind: no effect
    assert_eq!(page_ids(&b, id), before);

    b.put(id, &7u32.to_be_bytes(), b"changed").unwrap();
    let after = page_ids(&b, id);
    let copied: Vec<(usize, usize)> = before
        .iter()
        .zip(&after)
        .enumerate()
        .flat_map(|(kg, (was, now))| {
            assert_eq!(was.len(), now.len());
            was.iter()
                .zip(now)
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .map(move |(page, _)| (kg, page))
        })
        .collect();
    assert_eq!(copied.len(), 1, "one page copied: {copied:?}");
    assert_eq!(copied[0].0, hot, "of the written key group");

    // Growth under the snapshot splits the key group's pages.
    for ns in hot_namespaces..3 * hot_namespaces {
        b.put(id, &ns.to_be_bytes(), b"late").unwrap();
    }
    assert!(page_ids(&b, id)[hot].len() > before[hot].len());

    // The snapshot holds the state of its synchronous phase.
    let handle = task.run().unwrap().handle;
    let mut restored = HeapKeyedStateBackend::from_context(BackendContext {
        operator: "test".into(),
        max_parallelism: MAX_P,
        key_group_range: KeyGroupRange::all(MAX_P).unwrap(),
        restore: vec![handle],
        storage,
        restore_storage: None,
        skip_restored_states: Vec::new(),
    })
    .unwrap();
    assert_eq!(restored.num_entries(), 2_000 + hot_namespaces as usize);
    let id = register(&mut restored, "v", StateKind::Value);
    restored.set_current_key(b"hot").unwrap();
    assert_eq!(
        get(&mut restored, id, &7u32.to_be_bytes()),
        Some(b"v".to_vec())
    );
    assert_eq!(get(&mut restored, id, &hot_namespaces.to_be_bytes()), None);
    assert_eq!(b.num_entries(), 2_000 + 3 * hot_namespaces as usize);
}
