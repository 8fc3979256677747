#!/usr/bin/env bash
# Builds the tansu Kafka-protocol broker once and caches it by version; prints the path of
# the binary. The build takes about 10 minutes on 2 cores; later runs reuse the cached
# binary. Concurrent runs wait for one build (a lock), they never build twice.
#
# Environment: TANSU_VERSION (default 0.6.0), SHOPLENS_CACHE (default ~/.cache/shoplens).
set -euo pipefail
TANSU_VERSION="${TANSU_VERSION:-0.6.0}"
CACHE="${SHOPLENS_CACHE:-$HOME/.cache/shoplens}"
ROOT="$CACHE/tansu-$TANSU_VERSION"
BIN="$ROOT/bin/tansu"
if [[ ! -x "$BIN" ]]; then
    mkdir -p "$CACHE"
    exec 9>"$CACHE/tansu-$TANSU_VERSION.lock"
    flock 9
    # Someone else may have built it while this run waited for the lock.
    if [[ ! -x "$BIN" ]]; then
        echo "building tansu $TANSU_VERSION into $ROOT (one-off, ~10 min)" >&2
        rm -rf "$ROOT.partial"
        # Its own throw-away target directory (not the workspace's CARGO_TARGET_DIR), so the
        # build neither holds the workspace build's lock nor leaves gigabytes behind.
        # Features: `libsql` is the file-backed sqlite storage engine the tests use.
        env -u CARGO_TARGET_DIR cargo install tansu --version "=$TANSU_VERSION" --locked \
            --features dynostore,libsql --root "$ROOT.partial" >&2
        rm -rf "$ROOT"
        mv "$ROOT.partial" "$ROOT"
    fi
fi
echo "$BIN"
