#!/usr/bin/env bash
# The deterministic simulation (state_testkit::schedule) with many seeds, on
# every backend: seeded random lifecycles of checkpoints, aborts, crashes at
# another parallelism, savepoints, lost/late/reordered notices and storage
# faults, every retained checkpoint checked against its model. CI runs a few
# hundred seeds; this runs SEEDS per test (default 2000).
#
#   scripts/simulate.sh            # 2000 seeds per schedule test
#   scripts/simulate.sh 500
#   STATE_SCHEDULE_FIRST_SEED=100000 scripts/simulate.sh 200   # fresh seeds
#   STATE_SCHEDULE_SEED=17 cargo test -p state-heap --test lifecycle   # replay one seed
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
export STATE_SCHEDULE_SEEDS="${1:-2000}"
cargo test --release -p state-heap -p state-rocksdb -p state-changelog --test lifecycle \
    random_schedules -- --nocapture
