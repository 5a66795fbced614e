#!/usr/bin/env bash
# Runs every test of conveyor-host: formatting and lints, unit tests, and the end-to-end tests
# (which build the example and test drivers for wasm32-wasip2 and start the real host).
# Installs what it needs: the wasm32-wasip2 Rust target, nats-server, componentize-py, Node.js,
# jco, PyJWT, upstream's Python client with an OpenAPI validator, and Chromium for the
# dashboard (see examples/tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# A CI run builds from nothing once: incremental compilation's bookkeeping only costs it time.
if [ -n "${CI:-}" ]; then
    export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
fi
# The end-to-end tests mostly wait (on hosts, drivers, nats-server, a browser): eight at a time
# keep two cores busy (four left them a quarter idle, the suite 15 % slower). Set
# RUST_TEST_THREADS to change it.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-8}"

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "==> installing the wasm32-wasip2 target"
    rustup target add wasm32-wasip2
fi
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    echo "==> installing rustfmt and clippy"
    rustup component add rustfmt clippy
fi

# nats-server (>= 2.10) for the NATS-mode tests; componentize-py, Node.js and jco for the Python
# and JavaScript drivers. examples/tools.sh installs what is missing into .tools/.
. examples/tools.sh
tools_nats_server
tools_polyglot
tools_jwt
tools_compat
tools_chromium
echo "==> using $("$NATS_SERVER" --version) and $("$CHROMIUM" --version 2>/dev/null)"

echo "==> cargo fmt --check"
cargo fmt --all --check

echo "==> SDK unit tests (Python, JavaScript)"
"$TOOLS_VENV/bin/python" -m unittest discover -s guest-sdk/python
(cd guest-sdk/js && "$TOOLS_VENV/bin/node" --import ./test/wit-imports.mjs --test test/*.test.mjs)

# Clippy lints the workspace's crates while they are built: clippy-driver as the workspace's
# rustc wrapper, as `cargo clippy` itself runs it, with its `-D warnings` passed the way
# cargo-clippy passes it. The drivers are linted in their wasm32 build, the host, the SDK and
# the harness in the test build (every target: lib, bins, tests, benches), so no dependency is
# checked once for clippy and built again for the tests.
CLIPPY_DRIVER="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)"
export RUSTC_WORKSPACE_WRAPPER="$CLIPPY_DRIVER"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"

echo "==> building the drivers (wasm32-wasip2), with clippy's lints"
cargo build --release --target wasm32-wasip2 -p sample-driver -p rust-driver -p test-driver -p noop-driver \
    -p step-a -p step-b -p step-c

echo "==> building the host, the SDK and the harness, every target, with clippy's lints"
cargo test -p conveyor-host -p conveyor-driver -p conveyor-test-support --all-targets --no-run

echo "==> cargo test"
# Unit tests first, the end-to-end tests (one binary, tests/e2e) last (doc tests are not run:
# the examples in the docs are illustrations, compiled by the real crates under examples/ and
# tests/drivers/).
cargo test -p conveyor-driver -p conveyor-host --lib --bins --tests
