#!/usr/bin/env bash
# The conveyor-host demo: builds the example drivers (the Rust sample driver for wasm32-wasip2,
# the Python driver with componentize-py, the JavaScript driver with jco), starts the host in
# embedded mode, and for each driver creates a resource definition and a resource, prints the
# driver's log lines as they stream and its result; then stops the host.
# Installs what it needs: the wasm32-wasip2 target, and componentize-py, Node.js and jco into
# .tools/ (see examples/tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "==> installing the wasm32-wasip2 target"
    rustup target add wasm32-wasip2
fi
. examples/tools.sh
tools_polyglot

echo "==> building the example drivers and the host"
cargo build --release --target wasm32-wasip2 -p sample-driver
cargo build -p conveyor-host --bin conveyor-host --example demo
target="${CARGO_TARGET_DIR:-target}"
mkdir -p examples/drivers
cp "$target/wasm32-wasip2/release/sample_driver.wasm" examples/drivers/sample-driver.wasm
examples/python-driver/build.sh examples/drivers/python-driver.wasm
examples/js-driver/build.sh examples/drivers/js-driver.wasm >/dev/null

exec "$target/debug/examples/demo" examples
