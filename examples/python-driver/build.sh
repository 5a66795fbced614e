#!/usr/bin/env bash
# Builds the Python driver into a component: examples/python-driver/python-driver.wasm.
# Needs componentize-py (pip install componentize-py==0.25.1); tests/run.sh and examples/demo.sh
# install it into .tools/venv, which this script uses when it is there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
PATH="$root/.tools/venv/bin:$PATH"
out="${1:-$here/python-driver.wasm}"
if ! command -v componentize-py >/dev/null; then
    echo "componentize-py is not installed: run tests/run.sh once (it installs it into .tools/), or pip install componentize-py==0.25.1" >&2
    exit 1
fi
componentize-py -d "$root/wit" -w driver componentize app \
    -p "$here" -p "$root/guest-sdk/python" -o "$out"
