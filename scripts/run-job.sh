#!/usr/bin/env bash
# The main job: builds (release) and runs state-job. Arguments go to the job;
# see `scripts/run-job.sh --help`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo run --release -p state-job -- "$@"
