//! The suite: Flink's state micro-benchmark workloads on every backend
//! beside raw baselines, in one run, written as a report.
//!
//! `cargo bench --bench suite` writes `target/state-bench/suite.md` and
//! `suite.svg` (or into `BENCH_REPORT_DIR`); `scripts/bench-report.sh`
//! runs it and copies the report to `docs/benchmarks/`. `BENCH_KEYS`,
//! `BENCH_ROUNDS`, `BENCH_HEAP_OPS` and `BENCH_ROCKSDB_OPS` change the size;
//! `BENCH_FAMILIES=memory` or `rocksdb` runs one family,
//! `BENCH_WORKLOADS=valueGet,mapGet` some workloads (Flink's names), e.g.
//! to profile one of them under `valgrind --tool=callgrind`.
//! Run without `--bench` (as `cargo test` runs bench targets), it runs a
//! tiny size and writes nothing.

use std::time::Instant;

use state_benches::measure::Plan;
use state_benches::workloads::Workload;
use state_benches::{SuiteConfig, run_suite};

/// `env_or` for sizes.
fn env_or(name: &str, default: usize) -> usize {
    state_benches::env_or(name, default as u64) as usize
}

fn main() -> std::io::Result<()> {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let defaults = SuiteConfig::default();
    let config = if bench_mode {
        let rounds = |family: Option<Plan>| env_or("BENCH_ROUNDS", family.map_or(1, |p| p.rounds));
        let families = std::env::var("BENCH_FAMILIES").unwrap_or_else(|_| "memory,rocksdb".into());
        let wanted = |family: &str| families.split(',').any(|f| f.trim() == family);
        SuiteConfig {
            keys: env_or("BENCH_KEYS", defaults.keys),
            heap: wanted("memory").then(|| Plan {
                rounds: rounds(defaults.heap),
                ops: env_or("BENCH_HEAP_OPS", defaults.heap.map_or(1, |p| p.ops)),
            }),
            rocksdb: wanted("rocksdb").then(|| Plan {
                rounds: rounds(defaults.rocksdb),
                ops: env_or("BENCH_ROCKSDB_OPS", defaults.rocksdb.map_or(1, |p| p.ops)),
            }),
            workloads: match std::env::var("BENCH_WORKLOADS") {
                Ok(names) => Workload::ALL
                    .into_iter()
                    .filter(|w| names.split(',').any(|n| n.trim() == w.name()))
                    .collect(),
                Err(_) => defaults.workloads.clone(),
            },
        }
    } else {
        let tiny = Some(Plan { rounds: 1, ops: 20 });
        SuiteConfig {
            keys: 100,
            heap: tiny,
            rocksdb: tiny,
            workloads: Workload::ALL.to_vec(),
        }
    };
    let started = Instant::now();
    let mut report = run_suite(&config, |line| eprintln!("{line}"));
    if !bench_mode {
        return Ok(());
    }
    report.context.push(format!(
        "{} logical CPUs; suite ran {:.0} s",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        started.elapsed().as_secs_f64()
    ));
    let dir = state_benches::report_dir()?;
    let markdown = report.markdown();
    std::fs::write(dir.join("suite.md"), &markdown)?;
    std::fs::write(dir.join("suite.svg"), report.svg())?;
    println!("{markdown}");
    println!("report: {}", dir.join("suite.md").display());
    Ok(())
}
