#!/usr/bin/env bash
# The crash test (crates/crash-test): every backend configuration, with one
# and three retained checkpoints, on local disk and on S3 (SeaweedFS started
# on loopback for the run), each killed TRIALS times with SIGKILL at random
# moments and at crash points of the checkpoint protocol. Prints one summary
# line per configuration; exits non-zero if anything was lost, corrupt,
# leaked or failed. Logs of failed lives stay in target/crash-test/.
#
#   scripts/crash-test.sh                 # 1000 lives per configuration
#   scripts/crash-test.sh 50              # a shorter run
#   CRASH_TEST_STORAGE=local scripts/crash-test.sh 200   # local disk only
#   CRASH_TEST_PROFILE=debug scripts/crash-test.sh 20    # no release build
#   CRASH_TEST_MAX_LIFE_MS=1000 scripts/crash-test.sh     # shorter lives
#   CRASH_TEST_OUT=target/crash-test-s3 CRASH_TEST_STORAGE=s3 scripts/crash-test.sh
#                                         # a second run beside the first
#
# CI runs a short version as a test (crates/crash-test/tests/short.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

TRIALS="${1:-1000}"
PROFILE="${CRASH_TEST_PROFILE:-release}"
STORAGES="${CRASH_TEST_STORAGE:-local s3}"
OUT="${CRASH_TEST_OUT:-target/crash-test}"
MAX_LIFE_MS="${CRASH_TEST_MAX_LIFE_MS:-3000}"

scripts/setup.sh
if [ "$PROFILE" = release ]; then
    cargo build --release -p crash-test --features state-storage/s3
else
    cargo build -p crash-test --features state-storage/s3
fi
BIN="target/$PROFILE/crash-test"

if [[ " $STORAGES " == *" s3 "* ]]; then
    scripts/s3-server.sh start
    trap 'scripts/s3-server.sh stop' EXIT
    eval "$(scripts/s3-server.sh env)"
    # object_store's S3 builder reads these.
    export AWS_ENDPOINT="$STATE_S3_ENDPOINT" AWS_ALLOW_HTTP=true
fi

WORKLOAD=(--keys 500 --events 100000000)
CONFIGS=(
    "heap|"
    "rocksdb-incremental|--backend rocksdb"
    "rocksdb-full|--backend rocksdb --full-checkpoints"
    "changelog-heap|--changelog --materialization-interval-ms 300"
    "changelog-rocksdb|--backend rocksdb --changelog --materialization-interval-ms 300"
)

rm -rf "$OUT"
mkdir -p "$OUT"
failed=0
for storage in $STORAGES; do
    for retained in 1 3; do
        for entry in "${CONFIGS[@]}"; do
            name="${entry%%|*}"
            flags="${entry#*|}"
            dir="$OUT/$storage-$name-retained-$retained"
            checkpoint_dir=()
            if [ "$storage" = s3 ]; then
                checkpoint_dir=(--checkpoint-dir "s3://$STATE_S3_BUCKET/crash-test/$name-$retained")
            fi
            # shellcheck disable=SC2086 # $flags is a list of flags
            if ! "$BIN" run --trials "$TRIALS" --seed "$retained" --dir "$dir" \
                --max-life-ms "$MAX_LIFE_MS" --checkpoint-events 2000 \
                "${checkpoint_dir[@]}" -- $flags --num-retained "$retained" "${WORKLOAD[@]}" \
                | sed "s/^crash-test /crash-test [$storage] /"; then
                failed=1
            fi
        done
    done
done
exit "$failed"
