#!/usr/bin/env bash
# Runs every check and test of ShopLens on a fresh Debian 12 machine with Rust installed (as
# root, or as a user who may run apt-get): installs what the tests need (apt), builds the
# tansu Kafka broker once (cached by version under ~/.cache/shoplens), starts ClickHouse and
# tansu on 127.0.0.1 with their own ports and temp dirs, then runs formatting, lints and all
# tests with cargo-nextest. The servers are stopped when the script exits, however it exits.
#
# Every test sees SHOPLENS_TEST_CLICKHOUSE_URL, SHOPLENS_TEST_KAFKA_BROKERS and
# SHOPLENS_TEST_POSTGRES_URL; the services' and end-to-end tests run a second time with their
# services on PostgreSQL (SHOPLENS_TEST_SERVICES_DB=postgres).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

# Build products are cached between runs on the same machine; a fresh machine just builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shoplens/target}"
export CARGO_TERM_COLOR=never
export RUST_BACKTRACE=1
CACHE="${SHOPLENS_CACHE:-$HOME/.cache/shoplens}"
mkdir -p "$CACHE"

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# psql drives the analytics server's Postgres endpoint in its tests.
command -v psql >/dev/null 2>&1 || need_apt+=(postgresql-client)
command -v clickhouse-server >/dev/null 2>&1 || need_apt+=(clickhouse-server)
command -v clickhouse-client >/dev/null 2>&1 || need_apt+=(clickhouse-client)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
command -v flock >/dev/null 2>&1 || need_apt+=(util-linux)
# rdkafka builds its bundled librdkafka with the C compiler and make.
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
command -v make >/dev/null 2>&1 || need_apt+=(make)
if [ ${#need_apt[@]} -gt 0 ]; then
    log "installing apt packages: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The outside Kafka client the interoperability tests drive (Python confluent-kafka wheel,
# with its own current librdkafka).
if ! python3 -c 'import confluent_kafka' >/dev/null 2>&1; then
    log "installing the Python confluent-kafka client (pip)"
    python3 -m pip install -q confluent-kafka 2>/dev/null \
        || python3 -m pip install -q --break-system-packages confluent-kafka
fi

# The tansu broker: cached after the first build. A first build (~10 min on 2 cores) runs in
# the background, at a lower priority, while the workspace builds.
TANSU_BUILD_PID=""
TANSU_BUILD_LOG="$CACHE/tansu-build.log"
TANSU_BIN_FILE=$(mktemp)
cleanup() {
    local status=$?
    if [[ -n "$TANSU_BUILD_PID" ]]; then
        # Its own process group (setsid): stops cargo and the compilers with it.
        kill -- "-$TANSU_BUILD_PID" 2>/dev/null || true
        wait "$TANSU_BUILD_PID" 2>/dev/null || true
    fi
    if declare -F stop_servers >/dev/null; then stop_servers; fi
    rm -f "$TANSU_BIN_FILE"
    exit "$status"
}
trap cleanup EXIT
log "tansu Kafka broker (build log: $TANSU_BUILD_LOG)"
setsid nice -n 10 ./scripts/ensure-tansu.sh >"$TANSU_BIN_FILE" 2>"$TANSU_BUILD_LOG" &
TANSU_BUILD_PID=$!

if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    env -u CARGO_TARGET_DIR cargo install --locked cargo-nextest
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "building"
cargo build --workspace --all-targets --locked

log "waiting for the tansu build"
if ! wait "$TANSU_BUILD_PID"; then
    TANSU_BUILD_PID=""
    echo "building tansu failed; the end of its log ($TANSU_BUILD_LOG):" >&2
    tail -n 60 "$TANSU_BUILD_LOG" >&2
    exit 1
fi
TANSU_BUILD_PID=""
TANSU_BIN=$(tail -n 1 "$TANSU_BIN_FILE")
export TANSU_BIN

# What runs a second time with the services on PostgreSQL: the services' suites, the
# simulator's, and the end-to-end tests but those about SQLite files.
POSTGRES_FILTER='package(customer-service) | package(order-service) | package(payment-service)
    | package(product-service) | package(shipping-service) | package(shop-simulator)
    | (package(shoplens) & binary(e2e) & not test(/^components::/))'

log "starting ClickHouse, the Kafka broker and PostgreSQL"
# shellcheck source=scripts/servers.sh
source scripts/servers.sh
start_servers
trap cleanup EXIT # start_servers installed its own trap; cleanup stops the servers too

log "tests"
cargo nextest run --workspace --locked --no-fail-fast --failure-output final

# The services again, on PostgreSQL: their own suites, the simulator's, and the end-to-end
# tests (whose systems then keep every service's data in a database of the test server);
# the tests of several replicas sharing one database run in this pass only.
log "tests of the services on PostgreSQL"
SHOPLENS_TEST_SERVICES_DB=postgres cargo nextest run --workspace --locked --no-fail-fast \
    --failure-output final -E "$POSTGRES_FILTER"
log "all checks and tests passed"
