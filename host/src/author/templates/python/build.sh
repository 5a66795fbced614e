#!/usr/bin/env bash
# Builds the {{name}} driver into a component: {{name}}.wasm beside this script.
# Needs componentize-py 0.25.1 (pip install componentize-py==0.25.1).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if ! command -v componentize-py >/dev/null; then
    echo "componentize-py is not installed: pip install componentize-py==0.25.1" >&2
    exit 1
fi
componentize-py -d "$here/wit" -w driver componentize app -p "$here" -o "$here/{{name}}.wasm"
echo "built $here/{{name}}.wasm"
