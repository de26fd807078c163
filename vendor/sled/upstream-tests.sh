#!/usr/bin/env bash
# Runs sled 0.34.7's own test suite against this patched source (see PATCHES.md).
#
# sled's tests are not part of Muster's build: their dev-dependencies are not in our lock file
# and they take minutes. Run this after changing anything under vendor/sled/src:
#
#   vendor/sled/upstream-tests.sh            # all of upstream's test binaries, ~5 min
#   vendor/sled/upstream-tests.sh test_tree  # one of them
#
# It unpacks the published crate (from cargo's cache, or downloads it), overlays our src/, and
# runs `cargo test --release --features testing` in a scratch directory. One adjustment, in the
# scratch copy only: one upstream test does not compile with today's rustc (`let sub` needs
# `mut`).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=${SLED_TEST_DIR:-${TMPDIR:-/tmp}/sled-upstream-tests}
version=0.34.7

crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/sled-$version.crate 2>/dev/null | head -1 || true)
rm -rf "$work/sled-$version"
mkdir -p "$work"
if [ -z "$crate" ]; then
  crate=$work/sled-$version.crate
  curl -sSfL -o "$crate" "https://static.crates.io/crates/sled/sled-$version.crate"
fi
tar -xzf "$crate" -C "$work"
cd "$work/sled-$version"
rm -rf src
cp -r "$here/src" src

sed -i 's/let sub = db.watch_prefix(b"k1");/let mut sub = db.watch_prefix(b"k1");/' tests/test_tree.rs

if [ $# -gt 0 ]; then
  for t in "$@"; do cargo test --release --features testing --test "$t"; done
else
  cargo test --release --features testing --tests
fi
