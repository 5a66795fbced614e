#!/usr/bin/env bash
# Builds the {{name}} driver into a component: {{name}}.wasm beside this script (the same as
# `npm install && npm run build`). Needs Node.js 20 or later.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if ! command -v node >/dev/null; then
    echo "node is not installed: install Node.js 20 or later" >&2
    exit 1
fi
if [ ! -x "$here/node_modules/.bin/jco" ]; then
    (cd "$here" && npm install --no-audit --no-fund --loglevel=error)
fi
node "$here/build.mjs" "$here/{{name}}.wasm"
echo "built $here/{{name}}.wasm"
