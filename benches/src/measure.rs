//! Alternating rounds: every contestant of a family runs the same keys of a
//! workload in turn, round after round, so a busy machine slows them alike
//! and the ratios of their medians hold where absolute times do not.

use std::time::Instant;

use crate::workloads::{Contestant, KeySet, Workload};

/// How much to measure.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Measured rounds per workload and contestant (the median is kept).
    pub rounds: usize,
    /// Operations per round.
    pub ops: usize,
}

/// The rounds of one contestant on one workload.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// The workload.
    pub workload: Workload,
    /// The contestant's name.
    pub contestant: String,
    /// Nanoseconds per operation of each round, ascending.
    pub rounds_ns: Vec<f64>,
}

impl Measurement {
    /// The median round, in nanoseconds per operation.
    pub fn median_ns(&self) -> f64 {
        self.rounds_ns
            .get(self.rounds_ns.len() / 2)
            .copied()
            .unwrap_or(f64::NAN)
    }
}

/// Runs `workloads` on every contestant (populated here with `keys`): per
/// workload one unmeasured warm-up round, then `plan.rounds` rounds, the
/// contestants taking turns in a rotating order. Round `r` takes the keys
/// `r * ops ..` of the workload's key list (wrapping), the same for every
/// contestant.
///
/// `progress` is told each workload as it starts.
pub fn measure(
    contestants: &mut [&mut dyn Contestant],
    keys: &KeySet,
    workloads: &[Workload],
    plan: Plan,
    mut progress: impl FnMut(Workload),
) -> Vec<Measurement> {
    for contestant in contestants.iter_mut() {
        contestant.populate(keys);
    }
    let mut results = Vec::new();
    for &workload in workloads {
        progress(workload);
        let list = keys.for_workload(workload);
        let ops = plan.ops.min(list.len()).max(1);
        let chunk = |round: usize| {
            let start = (round * ops) % list.len();
            let end = (start + ops).min(list.len());
            (start, &list[start..end])
        };
        // Warm-up on the keys of the last round's successor.
        let (first, warm) = chunk(plan.rounds);
        for contestant in contestants.iter_mut() {
            contestant.run(workload, &warm[..warm.len().min(ops / 10 + 1)], first);
        }
        let mut rounds = vec![Vec::with_capacity(plan.rounds); contestants.len()];
        for round in 0..plan.rounds {
            let (first, batch) = chunk(round);
            let n = contestants.len();
            for turn in 0..n {
                let index = (turn + round) % n;
                let start = Instant::now();
                contestants[index].run(workload, batch, first);
                let elapsed = start.elapsed().as_nanos() as f64;
                rounds[index].push(elapsed / batch.len() as f64);
            }
        }
        for (contestant, mut rounds_ns) in contestants.iter().zip(rounds) {
            rounds_ns.sort_by(f64::total_cmp);
            results.push(Measurement {
                workload,
                contestant: contestant.name(),
                rounds_ns,
            });
        }
    }
    results
}
