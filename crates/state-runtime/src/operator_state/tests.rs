use std::sync::Arc;

use proptest::prelude::*;
use state_api::CheckpointStorageAccess;
use state_api::operator_state::OperatorStateMode;
use state_storage::ObjectStoreCheckpointStorage;

use super::*;

fn storage() -> Arc<dyn CheckpointStorageAccess> {
    Arc::new(ObjectStoreCheckpointStorage::in_memory("job").unwrap())
}

fn bytes(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

/// Snapshots of `parallelism` instances; instance `i` holds `counts[i]`
/// elements `"{name}-{i}-{j}"` in each of the states `names`.
fn snapshots(
    storage: &dyn CheckpointStorageAccess,
    counts: &[usize],
    names: &[&str],
    mode: OperatorStateMode,
) -> Vec<OperatorStateHandle> {
    let parallelism = counts.len() as u32;
    let mut handles = Vec::new();
    for (subtask, count) in counts.iter().enumerate() {
        let mut backend = OperatorStateBackend::new(subtask as u32, parallelism);
        for name in names {
            let list = backend.register_list(name, mode).unwrap();
            list.extend((0..*count).map(|j| bytes(&format!("{name}-{subtask}-{j}"))));
        }
        handles.extend(backend.snapshot(1, storage).unwrap());
    }
    handles
}

fn restore_all(
    storage: &dyn CheckpointStorageAccess,
    handles: &[OperatorStateHandle],
    parallelism: u32,
) -> Vec<OperatorStateBackend> {
    (0..parallelism)
        .map(|subtask| {
            OperatorStateBackend::restore(handles, subtask, parallelism, storage).unwrap()
        })
        .collect()
}

#[test]
fn at_the_same_parallelism_each_instance_gets_its_own_elements() {
    let storage = storage();
    let handles = snapshots(
        &*storage,
        &[3, 0, 1],
        &["offsets"],
        OperatorStateMode::SplitDistribute,
    );
    let restored = restore_all(&*storage, &handles, 3);
    assert_eq!(restored[0].list("offsets").len(), 3);
    assert!(restored[1].list("offsets").is_empty());
    assert_eq!(restored[2].list("offsets"), [bytes("offsets-2-0")]);
}

#[test]
fn rescaling_splits_into_contiguous_ranges_rotating_per_state() {
    let storage = storage();
    let handles = snapshots(
        &*storage,
        &[3, 2],
        &["a", "b"],
        OperatorStateMode::SplitDistribute,
    );
    let restored = restore_all(&*storage, &handles, 3);
    let sizes = |name: &str| {
        restored
            .iter()
            .map(|r| r.list(name).len())
            .collect::<Vec<_>>()
    };
    // Five elements over three: 2, 2, 1, the first range going to instance
    // 0 for "a" and to instance 1 for "b".
    assert_eq!(sizes("a"), vec![2, 2, 1]);
    assert_eq!(sizes("b"), vec![1, 2, 2]);
    assert_eq!(restored[0].list("a"), [bytes("a-0-0"), bytes("a-0-1")]);
    assert_eq!(restored[2].list("a"), [bytes("a-1-1")]);
}

#[test]
fn union_state_goes_to_every_instance() {
    let storage = storage();
    let handles = snapshots(&*storage, &[1, 2], &["all"], OperatorStateMode::Union);
    for parallelism in [1, 2, 3] {
        for restored in restore_all(&*storage, &handles, parallelism) {
            assert_eq!(restored.list("all").len(), 3);
        }
    }
}

#[test]
fn broadcast_state_is_read_from_instance_i_mod_the_old_parallelism() {
    let storage = storage();
    let mut handles = Vec::new();
    for subtask in 0..2u32 {
        let mut backend = OperatorStateBackend::new(subtask, 2);
        backend
            .broadcast_state("rules")
            .insert(bytes("from"), subtask.to_le_bytes().to_vec());
        handles.extend(backend.snapshot(1, &*storage).unwrap());
    }
    let restored = restore_all(&*storage, &handles, 3);
    let from: Vec<Vec<u8>> = restored
        .iter()
        .map(|r| r.map("rules").unwrap()[&bytes("from")].clone())
        .collect();
    assert_eq!(
        from,
        vec![
            0u32.to_le_bytes().to_vec(),
            1u32.to_le_bytes().to_vec(),
            0u32.to_le_bytes().to_vec()
        ]
    );
}

#[test]
fn inconsistent_handles_and_registrations_are_refused() {
    let storage = storage();
    let handles = snapshots(
        &*storage,
        &[1, 1],
        &["a"],
        OperatorStateMode::SplitDistribute,
    );
    let twice = vec![handles[0].clone(), handles[0].clone()];
    assert!(matches!(
        OperatorStateBackend::restore(&twice, 0, 1, &*storage),
        Err(StateError::Restore(_))
    ));
    let union = snapshots(&*storage, &[1, 1], &["a"], OperatorStateMode::Union);
    let mixed = vec![handles[0].clone(), union[1].clone()];
    assert!(matches!(
        OperatorStateBackend::restore(&mixed, 0, 1, &*storage),
        Err(StateError::Restore(_))
    ));
    let mut backend = OperatorStateBackend::new(0, 1);
    backend.list_state("a");
    assert!(
        backend
            .register_list("a", OperatorStateMode::Union)
            .is_err()
    );
    assert!(
        backend
            .register_list("b", OperatorStateMode::Broadcast)
            .is_err()
    );
    assert_eq!(
        backend
            .snapshot(1, &*storage)
            .unwrap()
            .map(|h| h.sections.len()),
        Some(1)
    );
    assert_eq!(
        OperatorStateBackend::new(0, 1)
            .snapshot(1, &*storage)
            .unwrap(),
        None
    );
}

#[test]
fn a_damaged_file_is_a_clear_error() {
    let storage = Arc::new(ObjectStoreCheckpointStorage::in_memory("job").unwrap());
    let mut handles = snapshots(&*storage, &[2], &["a"], OperatorStateMode::SplitDistribute);
    handles[0].sections[0].elements = 1_000;
    let error = OperatorStateBackend::restore(&handles, 0, 1, &*storage).unwrap_err();
    assert!(
        error.to_string().contains("claims 1000 elements"),
        "{error}"
    );
}

proptest! {
    /// Whatever the counts and parallelisms, an even-split state is
    /// partitioned: every element goes to exactly one new instance, and
    /// each instance's elements are a contiguous run of the old order.
    #[test]
    fn even_split_partitions_every_element(
        counts in proptest::collection::vec(0usize..6, 1..5),
        parallelism in 1u32..6,
    ) {
        let storage = storage();
        let handles = snapshots(&*storage, &counts, &["s"], OperatorStateMode::SplitDistribute);
        let all: Vec<Vec<u8>> = counts
            .iter()
            .enumerate()
            .flat_map(|(i, count)| (0..*count).map(move |j| bytes(&format!("s-{i}-{j}"))))
            .collect();
        let restored = restore_all(&*storage, &handles, parallelism);
        let mut seen: Vec<Vec<u8>> = restored.iter().flat_map(|r| r.list("s").to_vec()).collect();
        seen.sort();
        let mut expected = all.clone();
        expected.sort();
        prop_assert_eq!(seen, expected);
        if parallelism as usize != counts.len() {
            for r in &restored {
                let run = r.list("s");
                if let Some(first) = run.first() {
                    let start = all.iter().position(|e| e == first).unwrap();
                    prop_assert_eq!(&all[start..start + run.len()], run);
                }
            }
        }
    }
}
