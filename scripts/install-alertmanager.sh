#!/usr/bin/env bash
# Installs Debian's Prometheus Alertmanager (`prometheus-alertmanager` and `amtool`), which the
# end-to-end test tests/tests/feeds/alertmanager.rs runs to send a real webhook to intake.
# Idempotent: does nothing when both binaries are already on PATH or in /usr/bin.
#
#   bash scripts/install-alertmanager.sh
#
# Installing needs root and apt-get. The package's maintainer scripts would start an
# alertmanager service (port 9093); they are told not to (policy-rc.d), and a daemon that starts
# anyway is stopped again, so nothing is left running. The tests start their own on random ports.
set -euo pipefail

# The version Muster is tested with: Debian bookworm's. Another version is used with a warning
# (the webhook payload, version "4", has been stable for years).
ALERTMANAGER_VERSION="0.25.0"
PACKAGE="prometheus-alertmanager"

say() { printf 'install-alertmanager: %s\n' "$*"; }
warn() { printf 'install-alertmanager: warning: %s\n' "$*" >&2; }
die() { printf 'install-alertmanager: error: %s\n' "$*" >&2; exit 1; }

# Prints "0.25.0" for a binary that reports "alertmanager, version 0.25.0 (branch: ...)".
version_of() {
    "$1" --version 2>&1 | sed -n 's/.*version \([0-9][0-9.]*\).*/\1/p' | head -n 1 || true
}

# The path of binary $1: from PATH, else /usr/bin; nothing if neither has it.
find_binary() {
    if command -v "$1" >/dev/null 2>&1; then
        command -v "$1"
    elif [[ -x "/usr/bin/$1" ]]; then
        printf '/usr/bin/%s\n' "$1"
    fi
}

report() {
    local am="$1" amtool="$2" have
    have="$(version_of "$am")"
    if [[ "$have" != "$ALERTMANAGER_VERSION" ]]; then
        warn "$am is version ${have:-?}; Muster is tested with $ALERTMANAGER_VERSION"
    fi
    say "$1 ${have:+(version $have) }and $amtool are installed"
}

am="$(find_binary prometheus-alertmanager)"
amtool="$(find_binary amtool)"
if [[ -n "$am" && -n "$amtool" ]]; then
    report "$am" "$amtool"
    exit 0
fi

if [[ "$(id -u)" != 0 ]]; then
    die "prometheus-alertmanager and amtool are missing and this is not root: run this script as root (sudo bash scripts/install-alertmanager.sh), or install Debian's $PACKAGE package yourself"
fi
command -v apt-get >/dev/null 2>&1 ||
    die "prometheus-alertmanager and amtool are missing and there is no apt-get: install Prometheus Alertmanager $ALERTMANAGER_VERSION (both binaries, prometheus-alertmanager and amtool) on PATH"

# Only refresh the package lists when they do not know the package yet.
candidate() {
    apt-cache policy "$PACKAGE" 2>/dev/null | sed -n 's/^ *Candidate: *//p' | head -n 1
}
if [[ -z "$(candidate)" || "$(candidate)" == "(none)" ]]; then
    say "apt-get update (the package lists do not know $PACKAGE)"
    apt-get update -qq
fi
want="$(candidate)"
[[ -n "$want" && "$want" != "(none)" ]] ||
    die "apt has no $PACKAGE package (check /etc/apt/sources.list: Debian main is needed)"

# The daemons running before the install: those we must never touch.
running_before="$(pidof prometheus-alertmanager 2>/dev/null || true)"

# No service starts during the install (containers without systemd, CI machines): policy-rc.d
# answering 101 ("action forbidden") is honoured by invoke-rc.d and deb-systemd-invoke. An
# existing policy-rc.d is left alone; ours is removed again however the install ends.
policy=/usr/sbin/policy-rc.d
own_policy=0
cleanup() {
    if [[ "$own_policy" == 1 ]]; then rm -f "$policy"; fi
}
trap cleanup EXIT
if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\n# Temporary, from scripts/install-alertmanager.sh: start no services.\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    own_policy=1
fi

say "installing $PACKAGE $want with apt-get"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$PACKAGE" >/dev/null
cleanup
own_policy=0

# Stop a daemon the install started anyway (only one that was not running before).
for pid in $(pidof prometheus-alertmanager 2>/dev/null || true); do
    case " $running_before " in *" $pid "*) continue ;; esac
    warn "the install started an alertmanager daemon (pid $pid); stopping it"
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        systemctl stop prometheus-alertmanager.service >/dev/null 2>&1 || true
    fi
    kill "$pid" 2>/dev/null || true
done

hash -r
am="$(find_binary prometheus-alertmanager)"
amtool="$(find_binary amtool)"
[[ -n "$am" ]] || die "$PACKAGE is installed but prometheus-alertmanager is not on PATH or in /usr/bin"
[[ -n "$amtool" ]] || die "$PACKAGE is installed but amtool is not on PATH or in /usr/bin"
report "$am" "$amtool"
