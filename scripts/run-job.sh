#!/usr/bin/env bash
# The main job: builds (release) and runs state-job. Arguments go to the job;
# see `scripts/run-job.sh --help`. The backend and checkpoint settings come
# from flags or from a configuration file, e.g.
#   scripts/run-job.sh --config config/rocksdb.yaml
# (one example per backend in config/; see the README's "Configuration").
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo run --release -p state-job -- "$@"
