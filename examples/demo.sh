#!/usr/bin/env bash
# The conveyor-host demo: builds the sample driver for wasm32-wasip2, starts the host in
# embedded mode, creates a resource definition and a resource, prints the driver's log lines
# as they stream and its result, then stops the host.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "==> installing the wasm32-wasip2 target"
    rustup target add wasm32-wasip2
fi

echo "==> building the sample driver (wasm32-wasip2) and the host"
cargo build --release --target wasm32-wasip2 -p sample-driver
cargo build -p conveyor-host --bin conveyor-host --example demo
target="${CARGO_TARGET_DIR:-target}"
mkdir -p examples/drivers
cp "$target/wasm32-wasip2/release/sample_driver.wasm" examples/drivers/sample-driver.wasm

exec "$target/debug/examples/demo" examples
