#!/usr/bin/env bash
# Builds the {{name}} driver into a component: {{name}}.wasm beside this script.
# Needs a Rust toolchain with the wasm32-wasip2 target (rustup target add wasm32-wasip2).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
cargo build --release --target wasm32-wasip2
target="${CARGO_TARGET_DIR:-$here/target}"
cp "$target/wasm32-wasip2/release/{{crate}}.wasm" "$here/{{name}}.wasm"
echo "built $here/{{name}}.wasm"
