#!/usr/bin/env bash
# Builds the JavaScript driver into a component: examples/js-driver/js-driver.wasm, or the path
# given as the first argument; further arguments go to `jco componentize` (build.mjs). The same as `npm install && npm run build` here; it uses the
# Node.js that tests/run.sh and examples/demo.sh install into .tools/venv when it is there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
PATH="$root/.tools/venv/bin:$PATH"
if ! command -v node >/dev/null; then
    echo "node is not installed: run tests/run.sh once (it installs Node.js into .tools/), or install Node.js 20+" >&2
    exit 1
fi
if [ ! -x "$here/node_modules/.bin/jco" ]; then
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi
exec node "$here/build.mjs" "${1:-$here/js-driver.wasm}" "${@:2}"
