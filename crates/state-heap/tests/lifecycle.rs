//! The heap backend under the checkpoint lifecycle's ugly cases (see
//! `state_testkit::schedule`): notices lost, late and repeated, aborts,
//! storage faults; every retained checkpoint restores to its model and
//! nothing unreferenced is left after collection.

use state_heap::HeapKeyedStateBackend;
use state_testkit::schedule::{self, NoActions, Schedule};

fn run(seeds: std::ops::Range<u64>, fault_rate: f64) {
    for seed in seeds {
        let schedule = Schedule {
            fault_rate,
            ..Schedule::new(seed)
        };
        if let Err(e) = schedule::run(
            &schedule,
            HeapKeyedStateBackend::from_context,
            &mut NoActions,
        ) {
            panic!("{e}");
        }
    }
}

#[test]
fn random_schedules() {
    run(schedule::seeds(0, 2000), 0.0);
}

#[test]
fn random_schedules_with_storage_faults() {
    run(schedule::seeds(10_000, 500), 0.1);
}
