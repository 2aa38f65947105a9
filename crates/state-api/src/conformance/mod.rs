//! The conformance suite every backend and wrapper runs (feature
//! `conformance`), in the manner of `object_store`'s integration suite.
//!
//! Each check is a public function taking a [`Harness`]: a backend factory,
//! the checkpoint storage its snapshots go to, and a [`FaultInjector`] for that
//! storage. A backend's own test calls [`run_all`] (or single checks); the
//! heap backend's `tests/conformance.rs` is the template:
//!
//! ```text
//! let storage = Arc::new(ObjectStoreCheckpointStorage::in_memory("job")?);
//! let harness = Harness::new(&HeapBackendFactory::new(), storage.clone(), &*storage);
//! state_api::conformance::run_all(&harness);
//! ```
//!
//! Checks panic with a message naming what broke, like assertions. They only
//! use the public contracts, so they hold every backend to the same semantics:
//! state kinds and defaults, clear, namespace and key isolation, iteration,
//! registration and type errors, snapshot isolation under concurrent writes,
//! restore and rescaling round trips, clear errors for damaged snapshots, and a
//! randomized differential test against a plain model; the same for timers;
//! state time-to-live.
//!
//! Not a stable API: it changes with the contracts it checks.

mod differential;
mod fixtures;
mod restore;
mod semantics;
mod timers;
mod ttl;

use std::sync::Arc;

use crate::backend::{BackendContext, KeyedStateBackend, StateBackendFactory};
use crate::error::Result;
use crate::key_group::KeyGroupRange;
use crate::snapshot::{FileHandle, KeyedStateHandle, SnapshotOptions};
use crate::storage::CheckpointStorageAccess;

pub use differential::differential_against_model;
pub use fixtures::{Average, Dump, StandardStates, dump, keys_in_range};
pub use restore::{
    rescaling_round_trip, restore_failures_are_errors, restore_round_trip,
    skipped_states_are_not_restored, snapshot_isolation_under_concurrent_writes,
};
pub use semantics::{
    aggregating_state_semantics, iteration_and_apply_to_all_keys, key_and_namespace_isolation,
    list_state_semantics, map_state_semantics, misuse_is_an_error, reducing_state_semantics,
    registration_rules, value_state_semantics,
};
pub use timers::{
    timer_differential_against_model, timer_semantics, timers_survive_restore_and_rescaling,
};
pub use ttl::{
    ttl_expiry_per_value_element_and_entry, ttl_savepoints_leave_expired_entries_out,
    ttl_survives_restore, ttl_update_types_and_visibility,
};

/// Damages stored checkpoint files, so the suite can check that restores fail
/// with a clear error instead of panicking or losing data. Implemented by
/// checkpoint storage implementations for their tests.
pub trait FaultInjector: Send + Sync {
    /// Flips every bit of the byte at `payload_offset` of the stored file.
    ///
    /// # Errors
    /// Storage errors.
    fn corrupt_byte(&self, file: &FileHandle, payload_offset: u64) -> Result<()>;

    /// Cuts the stored object to its first `keep_bytes` bytes (counting the
    /// whole stored object, including any framing).
    ///
    /// # Errors
    /// Storage errors.
    fn truncate(&self, file: &FileHandle, keep_bytes: u64) -> Result<()>;

    /// Deletes the stored file.
    ///
    /// # Errors
    /// Storage errors.
    fn remove(&self, file: &FileHandle) -> Result<()>;
}

/// What the suite needs to test one backend.
pub struct Harness<'a> {
    /// Builds the backends under test.
    pub factory: &'a dyn StateBackendFactory,
    /// Where snapshots go.
    pub storage: Arc<dyn CheckpointStorageAccess>,
    /// Damages files in `storage`.
    pub faults: &'a dyn FaultInjector,
    /// Cases of the randomized differential test.
    pub differential_cases: u32,
}

impl<'a> Harness<'a> {
    /// A harness with the default number of differential cases (48).
    pub fn new(
        factory: &'a dyn StateBackendFactory,
        storage: Arc<dyn CheckpointStorageAccess>,
        faults: &'a dyn FaultInjector,
    ) -> Self {
        Self {
            factory,
            storage,
            faults,
            differential_cases: 48,
        }
    }

    /// A fresh backend for `range` of `max_parallelism`.
    ///
    /// # Panics
    /// When the factory fails.
    pub fn backend(
        &self,
        max_parallelism: u32,
        range: KeyGroupRange,
    ) -> Box<dyn KeyedStateBackend> {
        self.restore(max_parallelism, range, Vec::new())
            .unwrap_or_else(|e| {
                panic!(
                    "{}: creating a backend for {range} failed: {e}",
                    self.factory.name()
                )
            })
    }

    /// A backend restored from `handles`.
    ///
    /// # Errors
    /// Whatever the factory returns.
    pub fn restore(
        &self,
        max_parallelism: u32,
        range: KeyGroupRange,
        handles: Vec<KeyedStateHandle>,
    ) -> Result<Box<dyn KeyedStateBackend>> {
        self.restore_skipping(max_parallelism, range, handles, Vec::new())
    }

    /// A backend restored from `handles`, leaving out the states named in
    /// `skip` (see [`BackendContext::skip_restored_states`]).
    ///
    /// # Errors
    /// Whatever the factory returns.
    pub fn restore_skipping(
        &self,
        max_parallelism: u32,
        range: KeyGroupRange,
        handles: Vec<KeyedStateHandle>,
        skip: Vec<String>,
    ) -> Result<Box<dyn KeyedStateBackend>> {
        self.factory.create(BackendContext {
            operator: format!("conformance-{}", range.start()),
            max_parallelism,
            key_group_range: range,
            restore: handles,
            storage: Arc::clone(&self.storage),
            restore_storage: None,
            skip_restored_states: skip,
        })
    }

    /// Takes a complete checkpoint (both phases) and returns its handle.
    ///
    /// # Panics
    /// When either phase fails.
    pub fn checkpoint(
        &self,
        backend: &mut dyn KeyedStateBackend,
        checkpoint_id: u64,
    ) -> KeyedStateHandle {
        let task = backend
            .snapshot(
                checkpoint_id,
                &SnapshotOptions::checkpoint(checkpoint_id),
                Arc::clone(&self.storage),
            )
            .unwrap_or_else(|e| {
                panic!(
                    "{}: synchronous snapshot phase failed: {e}",
                    self.factory.name()
                )
            });
        let result = task.run().unwrap_or_else(|e| {
            panic!(
                "{}: asynchronous snapshot phase failed: {e}",
                self.factory.name()
            )
        });
        backend
            .notify_checkpoint_complete(checkpoint_id)
            .unwrap_or_else(|e| {
                panic!(
                    "{}: notify_checkpoint_complete failed: {e}",
                    self.factory.name()
                )
            });
        result.handle
    }
}

/// Runs `test` on `h.differential_cases` inputs drawn from `strategy`,
/// with a fixed seed so that failures reproduce; proptest shrinks a failing
/// input before the panic names it and `what`.
fn run_property<S: proptest::strategy::Strategy>(
    h: &Harness<'_>,
    what: &str,
    strategy: S,
    test: impl Fn(S::Value) -> std::result::Result<(), String>,
) where
    S::Value: std::fmt::Debug,
{
    use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
    let config = Config {
        cases: h.differential_cases,
        failure_persistence: None,
        max_shrink_iters: 500,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    if let Err(e) = runner.run(&strategy, |input| test(input).map_err(TestCaseError::fail)) {
        panic!("{}: {what} failed: {e}", h.factory.name());
    }
}

/// Runs every check of the suite.
///
/// # Panics
/// At the first check that fails, naming it.
pub fn run_all(harness: &Harness<'_>) {
    value_state_semantics(harness);
    list_state_semantics(harness);
    map_state_semantics(harness);
    reducing_state_semantics(harness);
    aggregating_state_semantics(harness);
    key_and_namespace_isolation(harness);
    iteration_and_apply_to_all_keys(harness);
    registration_rules(harness);
    misuse_is_an_error(harness);
    snapshot_isolation_under_concurrent_writes(harness);
    restore_round_trip(harness);
    rescaling_round_trip(harness);
    skipped_states_are_not_restored(harness);
    restore_failures_are_errors(harness);
    differential_against_model(harness);
    timer_semantics(harness);
    timers_survive_restore_and_rescaling(harness);
    timer_differential_against_model(harness);
    ttl_expiry_per_value_element_and_entry(harness);
    ttl_update_types_and_visibility(harness);
    ttl_survives_restore(harness);
    ttl_savepoints_leave_expired_entries_out(harness);
}
