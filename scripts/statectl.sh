#!/usr/bin/env bash
# statectl: list, inspect, verify, dump and dispose checkpoints and
# savepoints. Builds (release) and runs it; arguments go to statectl, e.g.
#   scripts/statectl.sh list target/state-job/checkpoints
#   scripts/statectl.sh verify target/state-job/savepoints/savepoint-<...>
# See `scripts/statectl.sh --help` and the README's "Command-line tool".
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh >&2
cargo run --quiet --release -p statectl -- "$@"
