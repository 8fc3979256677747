#!/usr/bin/env bash
# Builds the tansu Kafka-protocol broker once and caches it by version.
# Prints the path of the binary. The build takes about 10 minutes on 2 cores;
# later runs reuse the cached binary.
set -euo pipefail
TANSU_VERSION="${TANSU_VERSION:-0.6.0}"
CACHE="${SHOPLENS_CACHE:-$HOME/.cache/shoplens}"
ROOT="$CACHE/tansu-$TANSU_VERSION"
BIN="$ROOT/bin/tansu"
if [[ ! -x "$BIN" ]]; then
    echo "building tansu $TANSU_VERSION into $ROOT (one-off, ~10 min)" >&2
    cargo install tansu --version "=$TANSU_VERSION" --locked \
        --features dynostore,libsql --root "$ROOT.partial" >&2
    rm -rf "$ROOT"
    mv "$ROOT.partial" "$ROOT"
fi
echo "$BIN"
