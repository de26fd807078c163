#!/usr/bin/env bash
# The interop test: proves that a client generated from proto/muster/v1 in another language
# (Python, grpcio-tools) works against a real Muster.
#   1. `buf lint` (the pinned buf from npm) checks the proto files against buf.yaml, and
#      `buf breaking` checks that they only add to muster.v1 (proto/baseline/muster-v1.json);
#   2. a venv with tests/interop/requirements.txt (kept under the cargo target directory and
#      re-created only when that file or the Python version changes);
#   3. Python stubs generated from proto/ with `python -m grpc_tools.protoc` into a temp dir;
#   4. `muster up` (the debug build, built here) with a temp --data-dir, its own nats-server on a
#      random port and free ports for every listener;
#   5. tests/interop/flow.py: report -> watch until graded and assigned -> acknowledge -> see the
#      acknowledgement, plus a bad request that must be INVALID_ARGUMENT naming the field.
# Muster is always stopped and the temp dir removed, however the run ends. Exits non-zero, with
# the reason and the end of Muster's log, on any failure.
#
#   bash tests/interop/run.sh
#
# MUSTER_BIN=path uses that muster binary instead of building one.
set -euo pipefail

BUF_VERSION="1.75.0"
# Bounds, in seconds: the whole client run (it has tighter per-step deadlines of its own), and
# Muster's drain on stop.
FLOW_TIMEOUT_S=300
STOP_TIMEOUT_S=30

say() { printf 'interop: %s\n' "$*"; }
die() { printf 'interop: error: %s\n' "$*" >&2; exit 1; }

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
target="${CARGO_TARGET_DIR:-$repo/target}"
case "$target" in /*) ;; *) target="$repo/$target" ;; esac
tools="$target/interop"
mkdir -p "$tools"
started=$SECONDS

# Node and the venv's pip carry their own CA lists and ignore the system store. Where a
# TLS-inspecting proxy's CA is only in the system store (as on our CI machines), npm fails with
# SELF_SIGNED_CERT_IN_CHAIN (and retries for minutes) unless pointed at it; so is pip.
system_ca=/etc/ssl/certs/ca-certificates.crt
if [[ -r $system_ca ]]; then
    export NODE_EXTRA_CA_CERTS="${NODE_EXTRA_CA_CERTS:-$system_ca}"
    export PIP_CERT="${PIP_CERT:-$system_ca}"
fi
command -v python3 >/dev/null 2>&1 ||
    die "python3 is needed for the interop test (a Python gRPC client): install Python 3.9 or newer (on Debian: apt-get install python3 python3-venv)"

# --- 1. buf lint --------------------------------------------------------------------------------
# buf is a single Go binary shipped in the npm package's platform sub-package; installed once
# into the target directory, so a rerun costs only the lint itself (well under a second).
buf_dir="$tools/buf-$BUF_VERSION"
buf="$buf_dir/node_modules/.bin/buf"
if [[ ! -x "$buf" ]] || [[ "$("$buf" --version 2>/dev/null)" != "$BUF_VERSION" ]]; then
    command -v npm >/dev/null 2>&1 ||
        die "npm is needed to install buf $BUF_VERSION (@bufbuild/buf) for the proto lint: install Node.js and npm (on Debian: apt-get install npm)"
    say "installing buf $BUF_VERSION (npm @bufbuild/buf) into $buf_dir"
    rm -rf "$buf_dir"
    timeout 300 npm install --silent --no-save --no-audit --no-fund --fetch-retries 2 \
        --prefix "$buf_dir" "@bufbuild/buf@$BUF_VERSION" >/dev/null ||
        die "npm could not install @bufbuild/buf@$BUF_VERSION within 5 minutes (the npm log in ~/.npm/_logs says why; a TLS-inspecting proxy needs NODE_EXTRA_CA_CERTS)"
    [[ "$("$buf" --version 2>/dev/null)" == "$BUF_VERSION" ]] ||
        die "$buf does not run or is not version $BUF_VERSION"
fi
say "buf lint (buf $BUF_VERSION, buf.yaml)"
"$buf" lint || die "buf lint found problems in proto/ (above); fix them, or add a justified except to buf.yaml"
say "buf breaking against proto/baseline/muster-v1.json"
"$buf" breaking --against proto/baseline/muster-v1.json ||
    die "proto/ breaks muster.v1 (above): v1 only changes additively (fields are never renumbered, retyped, renamed or reused); see buf.yaml"

# --- 2. the venv --------------------------------------------------------------------------------
requirements="tests/interop/requirements.txt"
venv="$tools/venv"
python="$venv/bin/python"
want_hash="$( (cat "$requirements"; python3 --version) | sha256sum | cut -d' ' -f1)"
if [[ ! -x "$python" ]] || [[ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want_hash" ]]; then
    say "creating the venv $venv from $requirements"
    rm -rf "$venv"
    if ! python3 -m venv "$venv" 2>"$tools/venv.err"; then
        # Debian splits venv (ensurepip) into its own package.
        if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
            say "python3 cannot create a venv; installing python3-venv with apt-get"
            rm -rf "$venv"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            python3 -m venv "$venv" || die "python3 -m venv fails even with python3-venv installed"
        else
            cat "$tools/venv.err" >&2
            die "python3 cannot create a venv: install python3-venv (sudo apt-get install python3-venv)"
        fi
    fi
    "$python" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        -r "$requirements" || die "pip could not install $requirements"
    echo "$want_hash" >"$venv/.requirements.sha256"
fi

# --- 3. the stubs -------------------------------------------------------------------------------
tmp="$(mktemp -d "${TMPDIR:-/tmp}/muster-interop.XXXXXX")"
muster_pid=""
# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
    if [[ -n "$muster_pid" ]] && kill -0 "$muster_pid" 2>/dev/null; then
        say "stopping muster (pid $muster_pid)"
        kill -TERM "$muster_pid" 2>/dev/null || true
        local deadline=$((SECONDS + STOP_TIMEOUT_S))
        while kill -0 "$muster_pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        if kill -0 "$muster_pid" 2>/dev/null; then
            say "muster did not stop within $STOP_TIMEOUT_S s; killing its process group"
        fi
    fi
    # muster ran in its own process group (setsid): end whatever of it is left, its
    # nats-server included, and nothing else.
    if [[ -n "$muster_pid" ]]; then
        kill -KILL -- "-$muster_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

gen="$tmp/gen"
mkdir -p "$gen"
(cd proto && "$python" -m grpc_tools.protoc -I . --python_out="$gen" --grpc_python_out="$gen" muster/v1/*.proto) ||
    die "grpc_tools.protoc could not compile proto/muster/v1"
say "generated Python stubs for $(cd proto && echo muster/v1/*.proto)"

# --- 4. muster up -------------------------------------------------------------------------------
if [[ -n "${MUSTER_BIN:-}" ]]; then
    muster="$MUSTER_BIN"
else
    locked=()
    [[ -f Cargo.lock ]] && locked=(--locked)
    say "cargo build -p muster"
    cargo build --quiet "${locked[@]}" -p muster
    muster="$target/debug/muster"
fi
[[ -x "$muster" ]] || die "no muster binary at $muster"

if [[ -z "${MUSTER_NATS_SERVER:-}" ]] && ! command -v nats-server >/dev/null 2>&1; then
    bash scripts/install-nats-server.sh
    for dir in /usr/local/bin "$HOME/.local/bin"; do
        if ! command -v nats-server >/dev/null 2>&1 && [[ -x "$dir/nats-server" ]]; then
            export PATH="$dir:$PATH"
        fi
    done
fi

# Four free ports, chosen by the kernel and released just before muster binds them.
read -r intake_port escalation_port dispatch_port feeds_port < <("$python" - <<'PY'
import socket
sockets = [socket.socket() for _ in range(4)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))
for s in sockets:
    s.close()
PY
)
data_dir="$tmp/data"
log="$tmp/muster.log"
say "starting muster up (data dir $data_dir; intake :$intake_port, escalation :$escalation_port, dispatch :$dispatch_port)"
NO_COLOR=1 setsid "$muster" up \
    --data-dir "$data_dir" \
    --nats-port 0 \
    --intake-addr "127.0.0.1:$intake_port" \
    --escalation-addr "127.0.0.1:$escalation_port" \
    --dispatch-addr "127.0.0.1:$dispatch_port" \
    --feeds-addr "127.0.0.1:$feeds_port" \
    >"$log" 2>&1 </dev/null &
muster_pid=$!

# --- 5. the Python client -----------------------------------------------------------------------
status=0
PYTHONPATH="$gen" timeout "$FLOW_TIMEOUT_S" "$python" tests/interop/flow.py \
    --intake "127.0.0.1:$intake_port" \
    --escalation "127.0.0.1:$escalation_port" \
    --dispatch "127.0.0.1:$dispatch_port" \
    --token-file "$data_dir/admin.token" \
    --muster-pid "$muster_pid" || status=$?
if ((status != 0)); then
    ((status == 124)) && printf 'interop: error: flow.py did not finish within %s s\n' "$FLOW_TIMEOUT_S" >&2
    printf 'interop: the end of the muster log (%s):\n' "$log" >&2
    tail -n 40 "$log" >&2 || true
    die "the Python client failed (status $status)"
fi
say "passed in $((SECONDS - started)) s"
