#!/usr/bin/env bash
# Runs every test in the workspace: installs the pinned nats-server first (the bus, service and
# end-to-end tests start real ones), then `cargo test --workspace --all-targets`.
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
exit "$status"
