#!/usr/bin/env bash
# Starts a ClickHouse server and a Kafka-protocol broker (tansu) on 127.0.0.1, each with its
# own ports and temp dir, for the tests and benchmarks. Meant to be sourced:
#
#   source scripts/servers.sh && start_servers
#
# Exports SHOPLENS_TEST_CLICKHOUSE_URL and SHOPLENS_TEST_KAFKA_BROKERS, and stops both
# servers when the calling shell exits (stop_servers).
set -euo pipefail

SERVERS_DIR=""
CH_PID=""
TANSU_PID=""

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

ensure_clickhouse() {
    if ! command -v clickhouse-server >/dev/null; then
        echo "installing clickhouse-server and clickhouse-client (apt)" >&2
        apt-get install -y clickhouse-server clickhouse-client >/dev/null 2>&1 \
            || { apt-get update >/dev/null && apt-get install -y clickhouse-server clickhouse-client >/dev/null; }
    fi
}

wait_for() {
    local what="$1" check="$2"
    for _ in $(seq 1 200); do
        if eval "$check" >/dev/null 2>&1; then return 0; fi
        sleep 0.05
    done
    echo "$what did not become ready; its log:" >&2
    cat "$SERVERS_DIR/$what.log" >&2 || true
    return 1
}

start_clickhouse() {
    ensure_clickhouse
    local dir="$SERVERS_DIR/clickhouse" http tcp interserver
    mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas"
    http=$(free_port); tcp=$(free_port); interserver=$(free_port)
    cat > "$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
XML
    cat > "$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$dir/server.log</log><errorlog>$dir/error.log</errorlog><console>0</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>$http</http_port>
  <tcp_port>$tcp</tcp_port>
  <interserver_http_port>$interserver</interserver_http_port>
  <path>$dir/data/</path>
  <tmp_path>$dir/tmp/</tmp_path>
  <user_files_path>$dir/user_files/</user_files_path>
  <format_schema_path>$dir/format_schemas/</format_schema_path>
  <users_config>$dir/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>536870912</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
XML
    clickhouse-server --config-file="$dir/config.xml" > "$SERVERS_DIR/clickhouse.log" 2>&1 &
    CH_PID=$!
    export SHOPLENS_TEST_CLICKHOUSE_URL="http://127.0.0.1:$http"
    wait_for clickhouse "curl -sf $SHOPLENS_TEST_CLICKHOUSE_URL/ping"
}

start_kafka() {
    local tansu port
    tansu=$("$(dirname "${BASH_SOURCE[0]}")/ensure-tansu.sh")
    port=$(free_port)
    mkdir -p "$SERVERS_DIR/tansu"
    "$tansu" broker --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine "sqlite://$SERVERS_DIR/tansu/broker.db" > "$SERVERS_DIR/tansu.log" 2>&1 &
    TANSU_PID=$!
    export SHOPLENS_TEST_KAFKA_BROKERS="127.0.0.1:$port"
    wait_for tansu "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", $port), 1)'"
}

stop_servers() {
    [[ -n "$CH_PID" ]] && kill "$CH_PID" 2>/dev/null || true
    [[ -n "$TANSU_PID" ]] && kill "$TANSU_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    [[ -n "$SERVERS_DIR" ]] && rm -rf "$SERVERS_DIR"
}

start_servers() {
    SERVERS_DIR=$(mktemp -d -t shoplens-servers.XXXXXX)
    trap stop_servers EXIT
    start_clickhouse
    start_kafka
    echo "ClickHouse at $SHOPLENS_TEST_CLICKHOUSE_URL, Kafka broker at $SHOPLENS_TEST_KAFKA_BROKERS (logs in $SERVERS_DIR)" >&2
}
