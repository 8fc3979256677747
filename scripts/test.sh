#!/usr/bin/env bash
# Runs every check and test of ShopLens on a fresh Debian 12 machine with Rust installed:
# installs what the tests need (apt), builds, then runs formatting, lints and all tests.
# Servers the tests talk to are started by the tests/this script on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# Build products are cached between runs on the same machine; a fresh machine just builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shoplens/target}"
export CARGO_TERM_COLOR=never
export RUST_BACKTRACE=1

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
    log "installing apt packages: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install --locked cargo-nextest
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "building"
cargo build --workspace --all-targets --locked

log "tests"
cargo nextest run --workspace --locked --no-fail-fast --failure-output final
