#!/usr/bin/env bash
# Runs every test in the workspace: installs the pinned nats-server first (the bus, service and
# end-to-end tests start real ones), then `cargo test --workspace --all-targets`, then the
# Python interop test (tests/interop/run.sh: buf lint, and a client generated from proto/ with
# grpcio-tools against a real `muster up`; it installs its own Python packages and buf).
# Fails when either fails.
#
#   scripts/test.sh [extra cargo test arguments, e.g. -- --nocapture]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

bash scripts/install-nats-server.sh
# Debian's prometheus-alertmanager and amtool, for the end-to-end Alertmanager webhook test.
bash scripts/install-alertmanager.sh
# The installer's target directory may not be on PATH in this shell (~/.local/bin without root).
for dir in /usr/local/bin "$HOME/.local/bin"; do
    if ! command -v nats-server >/dev/null 2>&1 && [[ -x "$dir/nats-server" ]]; then
        export PATH="$dir:$PATH"
    fi
done

locked=()
[[ -f Cargo.lock ]] && locked=(--locked)

status=0
cargo test "${locked[@]}" --workspace --all-targets "$@" || status=$?

# The interop test runs the muster binary that a plain, successful `cargo test --workspace`
# has just built (crates/muster's own tests need it); otherwise it builds one itself.
interop_env=()
if ((status == 0)) && (($# == 0)); then
    interop_env=(MUSTER_BIN="${CARGO_TARGET_DIR:-target}/debug/muster")
fi
interop_status=0
env "${interop_env[@]}" bash tests/interop/run.sh || interop_status=$?
if ((interop_status != 0)); then
    echo "test.sh: the interop test (tests/interop/run.sh) failed with status $interop_status" >&2
    ((status != 0)) || status=$interop_status
fi
exit "$status"
