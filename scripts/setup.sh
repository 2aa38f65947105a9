#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian machine with a Rust
# toolchain (rustup). Idempotent: does nothing when everything is present.
#
# - rustfmt and clippy (rustup components), for the CI checks;
# - SeaweedFS (`weed`, from PyPI) is installed on demand by scripts/s3-server.sh.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install a Rust toolchain with rustup first" >&2
    exit 1
fi

if command -v rustup >/dev/null 2>&1; then
    for component in rustfmt clippy; do
        if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
            echo "setup: installing rustup component ${component}" >&2
            rustup component add "${component}"
        fi
    done
fi
