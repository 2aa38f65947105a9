#!/usr/bin/env bash
# The benchmark report: Flink's state micro-benchmark workloads on every
# backend beside raw baselines in one run (benches/benches/suite.rs), written
# to docs/benchmarks/suite.md and suite.svg (linked from the README).
# Takes about 10 minutes on 2 cores. Size: BENCH_KEYS, BENCH_ROUNDS,
# BENCH_HEAP_OPS, BENCH_ROCKSDB_OPS (see the bench's docs).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
export BENCH_REPORT_DIR="${BENCH_REPORT_DIR:-$PWD/docs/benchmarks}"
cargo bench --workspace --features state-storage/s3 --bench suite
