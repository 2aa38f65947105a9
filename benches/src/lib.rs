//! Benchmarks of the state backends; the benchmark binaries are in
//! `benches/`.
//!
//! * `cargo bench --bench suite` (or `scripts/bench-report.sh`): the
//!   workloads of Flink's state micro-benchmarks ([`workloads`]) on every
//!   backend ([`backends`]) beside raw baselines ([`raw`]) in one run,
//!   measured in alternating rounds ([`measure`]), written as a markdown
//!   table and an SVG chart ([`report`]).
//! * `--bench heap`, `--bench rocksdb`, `--bench changelog`, `--bench
//!   savepoint`, `--bench ttl`: the rest (snapshot phases, copy-on-write
//!   stalls, restore and rescaling, checkpoint size, savepoints, TTL).
//!
//! This library holds what they share.

pub mod backends;
pub mod measure;
pub mod raw;
pub mod report;
pub mod workloads;

use backends::{BackendKind, BackendUnderTest};
use measure::{Plan, measure};
use raw::{RawHashMaps, RawRocksDb};
use report::{Comparison, Report};
use workloads::{Contestant, KeySet, Workload};

/// `0..n` in a fixed pseudo-random order (Fisher-Yates with xorshift64*), so
/// every benchmark touches keys in the same random order.
///
/// ```
/// let keys = state_benches::shuffled_keys(10);
/// assert_eq!(keys.len(), 10);
/// assert_ne!(keys, (0..10).collect::<Vec<u64>>());
/// ```
pub fn shuffled_keys(n: usize) -> Vec<u64> {
    let mut keys: Vec<u64> = (0..n as u64).collect();
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    for i in (1..n).rev() {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let random = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        keys.swap(i, (random % (i as u64 + 1)) as usize);
    }
    keys
}

/// The value of environment variable `name` as a number, or `default`
/// (benchmark sizes are set this way).
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Where benchmark binaries write their reports: `BENCH_REPORT_DIR`, else
/// `target/state-bench`; created if missing.
///
/// # Errors
/// When the directory cannot be created.
pub fn report_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::var_os("BENCH_REPORT_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/state-bench")
        });
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Bytes of the files under `dir`, recursively (0 for what cannot be read).
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => stack.push(entry.path()),
                Ok(meta) => total += meta.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// The size of one run of the suite, and what it runs.
#[derive(Clone, Debug)]
pub struct SuiteConfig {
    /// Set-up keys (Flink: 500k).
    pub keys: usize,
    /// Rounds and operations per round of the in-memory family (raw hash
    /// maps, heap, changelog over heap); `None` skips the family.
    pub heap: Option<Plan>,
    /// The same for the RocksDB family.
    pub rocksdb: Option<Plan>,
    /// The workloads, in suite order.
    pub workloads: Vec<Workload>,
}

impl Default for SuiteConfig {
    /// 500k keys, every workload; 5 rounds of 100k operations in memory
    /// and 7 rounds of 20k on RocksDB (in memory, each round on keys no
    /// other round of the workload used).
    fn default() -> Self {
        Self {
            keys: 500_000,
            heap: Some(Plan {
                rounds: 5,
                ops: 100_000,
            }),
            rocksdb: Some(Plan {
                rounds: 7,
                ops: 20_000,
            }),
            workloads: Workload::ALL.to_vec(),
        }
    }
}

/// The comparisons the suite reports, with the targets of the performance
/// issue: heap within 2x raw hash maps, RocksDB within 1.2x raw RocksDB
/// calls, the changelog's writes within 1.25x its wrapped backend.
pub fn comparisons() -> Vec<Comparison> {
    let compare = |subject: BackendKind, baseline: &str, target, writes_only| Comparison {
        subject: subject.name().into(),
        baseline: baseline.into(),
        target,
        writes_only,
    };
    vec![
        compare(BackendKind::Heap, "raw HashMap", 2.0, false),
        compare(BackendKind::RocksDb, "raw RocksDB", 1.2, false),
        compare(
            BackendKind::ChangelogHeap,
            BackendKind::Heap.name(),
            1.25,
            true,
        ),
        compare(
            BackendKind::ChangelogRocksDb,
            BackendKind::RocksDb.name(),
            1.25,
            true,
        ),
    ]
}

/// Runs every workload on the in-memory family, then on the RocksDB family
/// (one family in memory at a time), and returns the report.
/// `progress` gets a line per family and workload.
pub fn run_suite(config: &SuiteConfig, mut progress: impl FnMut(&str)) -> Report {
    let keys = KeySet::new(config.keys);
    let mut measurements = Vec::new();
    let mut context = format!("{} keys", config.keys);
    let families = [
        (
            config.heap,
            "in memory",
            [BackendKind::Heap, BackendKind::ChangelogHeap],
        ),
        (
            config.rocksdb,
            "RocksDB",
            [BackendKind::RocksDb, BackendKind::ChangelogRocksDb],
        ),
    ];
    // One family in memory at a time.
    for (plan, family, [backend, changelog]) in families {
        let Some(plan) = plan else { continue };
        let mut raw: Box<dyn Contestant> = match backend {
            BackendKind::Heap => Box::new(RawHashMaps::default()),
            _ => Box::new(RawRocksDb::new()),
        };
        let mut backend = BackendUnderTest::new(backend);
        let mut changelog = BackendUnderTest::new(changelog);
        progress(&format!(
            "{family}: {}, {}, {}",
            raw.name(),
            backend.name(),
            changelog.name()
        ));
        let mut contestants: [&mut dyn Contestant; 3] = [&mut *raw, &mut backend, &mut changelog];
        measurements.extend(measure(
            &mut contestants,
            &keys,
            &config.workloads,
            plan,
            |w| progress(&format!("  {}", w.name())),
        ));
        context += &format!(
            "; {family} {} rounds of {} operations",
            plan.rounds, plan.ops
        );
    }
    context += &format!(
        "; the contestants of a family take turns round by round; map iterations visit {} entries",
        workloads::MAP_ENTRIES
    );
    Report {
        context: vec![context],
        measurements,
        comparisons: comparisons(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole suite at a tiny size: every workload runs on every
    /// contestant without error and the report has every cell.
    #[test]
    fn the_suite_runs_every_workload_on_every_backend() {
        let tiny = Some(Plan { rounds: 1, ops: 50 });
        let report = run_suite(
            &SuiteConfig {
                keys: 300,
                heap: tiny,
                rocksdb: tiny,
                workloads: Workload::ALL.to_vec(),
            },
            |_| {},
        );
        let contestants = report.contestants();
        assert_eq!(contestants.len(), 6, "{contestants:?}");
        assert_eq!(report.workloads().len(), Workload::ALL.len());
        for workload in Workload::ALL {
            for comparison in &report.comparisons {
                let ratio = report.ratio(workload, comparison);
                assert!(
                    ratio.is_some_and(|r| r.is_finite() && r > 0.0),
                    "{workload:?} {comparison:?}"
                );
            }
        }
        assert!(!report.markdown().contains("| - "), "{}", report.markdown());
        assert!(report.svg().starts_with("<svg"));
    }

    /// Backends and raw baselines hold the same data after the same
    /// operations: the baselines do the same work, not less.
    #[test]
    fn backends_and_baselines_agree() {
        use state_api::KeyedStateBackendExt;
        let keys = KeySet::new(200);
        let mut heap = BackendUnderTest::new(BackendKind::Heap);
        let mut rocksdb = BackendUnderTest::new(BackendKind::RocksDb);
        for backend in [&mut heap, &mut rocksdb] {
            backend.populate(&keys);
            backend.run(Workload::ListAddAll, &keys.setup[..10], 0);
            backend.run(Workload::MapRemove, &keys.setup[..10], 0);
        }
        for backend in [&mut heap, &mut rocksdb] {
            let b = backend.backend();
            let list = b
                .list_state(state_api::ListStateDescriptor::<u64>::new("list"))
                .unwrap();
            let map = b
                .map_state(state_api::MapStateDescriptor::<u64, u64>::new("map"))
                .unwrap();
            let key = keys.setup[3];
            b.set_key(&key).unwrap();
            assert_eq!(
                list.get(b).unwrap().len(),
                1 + workloads::LIST_ELEMENTS as usize
            );
            assert_eq!(
                map.keys(b).unwrap().len(),
                workloads::MAP_ENTRIES as usize - 1
            );
            assert!(!map.contains(b, &Workload::user_key(3)).unwrap());
        }
    }
}
