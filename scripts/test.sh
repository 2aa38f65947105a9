#!/usr/bin/env bash
# The test command: every crate's tests, including the S3 tests against a real
# S3-compatible server (SeaweedFS) started on loopback for the run and stopped
# afterwards. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/s3-server.sh start
trap 'scripts/s3-server.sh stop' EXIT
eval "$(scripts/s3-server.sh env)"

cargo test --workspace --features state-storage/s3 "$@"
