#!/usr/bin/env bash
# Runs Muster on this machine and walks one incident through it:
#   1. installs nats-server (scripts/install-nats-server.sh) if it is missing,
#   2. builds muster and musterctl in release mode,
#   3. starts `muster up` in the background (data and log in .muster/),
#   4. reports a chemical-plant explosion and waits until units are assigned,
#   5. shows the incident and the incident list.
# Muster keeps running afterwards; stop it with `kill <pid>` (printed at the end).
#
#   scripts/quickstart.sh                 # Muster stays up in the background
#   scripts/quickstart.sh --foreground    # Muster stays in the foreground; Ctrl-C stops it cleanly
#   scripts/quickstart.sh -- --nats-port 4333   # extra arguments for `muster up`
set -euo pipefail

READY_TIMEOUT_S=60
ASSIGNED_TIMEOUT_S=30

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
say() { printf '\n==> %s\n' "$*"; }
die() { printf 'quickstart: error: %s\n' "$*" >&2; exit 1; }

foreground=false
up_args=()
while (($#)); do
    case "$1" in
        --foreground) foreground=true ;;
        -h|--help) usage; exit 0 ;;
        --) shift; up_args=("$@"); break ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
data_dir=".muster"
log="$data_dir/muster.log"
pid_file="$data_dir/muster.pid"
bin_dir="${CARGO_TARGET_DIR:-target}/release"
muster="$bin_dir/muster"
musterctl="$bin_dir/musterctl"

# 1. nats-server
if [[ -z "${MUSTER_NATS_SERVER:-}" ]] && ! command -v nats-server >/dev/null 2>&1; then
    say "installing nats-server"
    bash scripts/install-nats-server.sh
    # The installer's target directory may not be on PATH in this shell (~/.local/bin without root).
    for dir in /usr/local/bin "$HOME/.local/bin"; do
        if ! command -v nats-server >/dev/null 2>&1 && [[ -x "$dir/nats-server" ]]; then
            export PATH="$dir:$PATH"
        fi
    done
fi

# 2. build
say "building muster and musterctl (release)"
cargo build --release -p muster -p musterctl

# 3. start
mkdir -p "$data_dir"
if [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    old="$(cat "$pid_file")"
    die "Muster is already running (pid $old, log $log). Use it (\"$musterctl status\"), or stop it first: kill $old"
fi
say "starting muster up (log: $log)"
# NO_COLOR keeps escape codes out of the log file. nohup: a closed terminal must not stop Muster.
NO_COLOR=1 nohup "$muster" up --data-dir "$data_dir" "${up_args[@]}" >"$log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$pid_file"

started=false
# shellcheck disable=SC2317 # called from the EXIT trap
stop_muster() {
    if kill -0 "$pid" 2>/dev/null; then
        echo "quickstart: stopping Muster (pid $pid)" >&2
        kill -TERM "$pid" 2>/dev/null || true
        # Muster drains its services, then stops nats-server; give it a bounded wait.
        for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    rm -f "$pid_file"
}
# Interrupted or failed before the sample finished: do not leave a half-started Muster behind.
trap '$started || stop_muster' EXIT
trap 'exit 130' INT TERM

deadline=$((SECONDS + READY_TIMEOUT_S))
until "$musterctl" status >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid" && code=0 || code=$?
        printf '\nquickstart: muster up exited (status %s) before it was ready; the end of %s:\n' "$code" "$log" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        printf '\nquickstart: Muster was not ready within %s s; the end of %s:\n' "$READY_TIMEOUT_S" "$log" >&2
        tail -n 30 "$log" >&2
        "$musterctl" status >&2 || true
        exit 1
    fi
    sleep 0.5
done
sed -n '/^Muster is up/,/^Stop with/p' "$log"
"$musterctl" status

# 4. a sample incident
say "reporting a sample incident: explosion at a chemical plant, 12 dead"
report="$("$musterctl" report \
    --kind accident.hazardous_chemicals \
    --township 390202400 \
    --deaths 12 \
    --summary "Explosion at a chemical plant in the Langang park")"
echo "$report"
id="$(awk '/^reported /{ print $2; exit }' <<<"$report")"
[[ -n "$id" ]] || die "could not read the incident id from: $report"

say "waiting for escalation to grade it and dispatch to assign units"
deadline=$((SECONDS + ASSIGNED_TIMEOUT_S))
until "$musterctl" --json show "$id" 2>/dev/null | grep -q '"unit_id"'; do
    if ((SECONDS >= deadline)); then
        "$musterctl" show "$id" >&2 || true
        printf '\nquickstart: no units assigned to %s within %s s; the end of %s:\n' "$id" "$ASSIGNED_TIMEOUT_S" "$log" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
    sleep 0.5
done

# 5. show it
say "musterctl show $id"
"$musterctl" show "$id"
say "musterctl incidents"
"$musterctl" incidents

started=true
if ! $foreground; then
    cat <<MSG

Muster keeps running in the background (pid $pid).
  log:      $log
  try:      $musterctl --help
  stop it:  kill $pid
(Run scripts/quickstart.sh --foreground to keep it in the foreground and stop it with Ctrl-C.)
MSG
    exit 0
fi

# Foreground: follow the log until Ctrl-C, then let Muster drain.
cat <<MSG

Muster is running (pid $pid); following $log. Press Ctrl-C to stop it.
MSG
tail -n 0 -f --pid="$pid" "$log" &
tail_pid=$!
# shellcheck disable=SC2317 # called from the INT/TERM trap
forward() { kill -TERM "$pid" 2>/dev/null || true; }
trap forward INT TERM
trap 'rm -f "$pid_file"' EXIT
code=0
# `wait` returns early when a trapped signal arrives; keep waiting until Muster has really exited.
while kill -0 "$pid" 2>/dev/null; do
    wait "$pid" && code=0 || code=$?
done
wait "$tail_pid" 2>/dev/null || true
echo "Muster stopped (status $code)."
exit "$code"
