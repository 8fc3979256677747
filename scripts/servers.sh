#!/usr/bin/env bash
# Starts a ClickHouse server and a Kafka-protocol broker (tansu) on 127.0.0.1, each with its
# own ports and temp dir, for the tests and benchmarks. Meant to be sourced:
#
#   source scripts/servers.sh && start_servers
#
# Exports SHOPLENS_TEST_CLICKHOUSE_URL, SHOPLENS_TEST_KAFKA_BROKERS and (a PostgreSQL server
# for the services' tests on PostgreSQL) SHOPLENS_TEST_POSTGRES_URL, and stops the
# servers when the calling shell exits (stop_servers, installed as the EXIT trap; a caller
# with its own EXIT trap calls stop_servers from it). A server that does not start makes
# start_servers fail with that server's log on stderr. ClickHouse alone:
#
#   source scripts/servers.sh && SERVERS_DIR=$(mktemp -d) && start_clickhouse
#
# Needs python3 (ports, readiness checks), clickhouse-server (apt) and the tansu binary
# (scripts/ensure-tansu.sh builds and caches it; set TANSU_BIN to use another one).
#
# Sourcing changes no shell option of the caller (no `set -e`): every function checks its
# own steps and returns non-zero when a server is not up.

SERVERS_DIR="${SERVERS_DIR:-}"
CH_PID=""
TANSU_PID=""
SERVERS_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# How many times a server is started on fresh ports when it does not come up (e.g. a port
# picked free was taken by someone else before the server bound it).
SERVER_START_ATTEMPTS="${SERVER_START_ATTEMPTS:-3}"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$1" \
        >/dev/null 2>&1
}

# True when the HTTP URL $1 answers 200.
http_ok() {
    python3 -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1" \
        >/dev/null 2>&1
}

ensure_clickhouse() {
    if ! command -v clickhouse-server >/dev/null; then
        echo "installing clickhouse-server and clickhouse-client (apt)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server \
                clickhouse-client >/dev/null
    fi
}

# wait_ready NAME PID SECONDS CHECK...: waits until CHECK succeeds while PID lives. Returns 1
# at once when PID exits (e.g. its port was taken), or after SECONDS.
wait_ready() {
    local name="$1" pid="$2" seconds="$3"
    shift 3
    local deadline=$((SECONDS + seconds))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name (pid $pid) exited during start-up" >&2
            return 1
        fi
        if "$@"; then
            # Still ours? A server that failed to bind exits right after a check that
            # reached someone else's socket.
            sleep 0.2
            if kill -0 "$pid" 2>/dev/null; then return 0; fi
            echo "$name (pid $pid) exited during start-up" >&2
            return 1
        fi
        sleep 0.05
    done
    echo "$name did not become ready within ${seconds}s" >&2
    return 1
}

# Prints a server's logs to stderr (on a failed start).
show_logs() {
    local f
    for f in "$@"; do
        if [[ -s "$f" ]]; then
            echo "---- $f (last 60 lines) ----" >&2
            tail -n 60 "$f" >&2
        fi
    done
}

stop_pid() {
    local pid="$1" i
    [[ -n "$pid" ]] || return 0
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

start_clickhouse() {
    [[ -n "$SERVERS_DIR" ]] || { echo "start_clickhouse: set SERVERS_DIR first" >&2; return 1; }
    ensure_clickhouse || return 1
    local dir="$SERVERS_DIR/clickhouse" attempt http tcp interserver
    for attempt in $(seq 1 "$SERVER_START_ATTEMPTS"); do
        rm -rf "$dir"
        mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" || return 1
        http=$(free_port) && tcp=$(free_port) && interserver=$(free_port) || return 1
        cat > "$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default>
    <reader><readonly>1</readonly><max_execution_time>60</max_execution_time>
      <max_memory_usage>2000000000</max_memory_usage><max_result_rows>100000000</max_result_rows>
      <result_overflow_mode>throw</result_overflow_mode></reader></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
    <profile>default</profile><quota>default</quota></default>
    <shoplens_reader><password>reader-pass</password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
    <profile>reader</profile><quota>default</quota></shoplens_reader></users>
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
        if wait_ready clickhouse "$CH_PID" 60 http_ok "http://127.0.0.1:$http/ping"; then
            export SHOPLENS_TEST_CLICKHOUSE_URL="http://127.0.0.1:$http"
            # The read-only user of users.xml above (what the analytics server reads as).
            export SHOPLENS_TEST_CLICKHOUSE_READER="shoplens_reader"
            export SHOPLENS_TEST_CLICKHOUSE_READER_PASSWORD="reader-pass"
            return 0
        fi
        show_logs "$SERVERS_DIR/clickhouse.log" "$dir/error.log"
        stop_pid "$CH_PID"
        CH_PID=""
        echo "ClickHouse start attempt $attempt of $SERVER_START_ATTEMPTS failed" >&2
    done
    return 1
}

start_kafka() {
    [[ -n "$SERVERS_DIR" ]] || { echo "start_kafka: set SERVERS_DIR first" >&2; return 1; }
    local tansu="${TANSU_BIN:-}" attempt port
    if [[ -z "$tansu" ]]; then
        tansu=$("$SERVERS_SCRIPTS/ensure-tansu.sh") || return 1
    fi
    tansu=$(realpath "$tansu") || return 1
    for attempt in $(seq 1 "$SERVER_START_ATTEMPTS"); do
        rm -rf "$SERVERS_DIR/tansu"
        mkdir -p "$SERVERS_DIR/tansu" || return 1
        port=$(free_port) || return 1
        # Run in its own directory: tansu reads `sqlite:///abs/path` as a relative path.
        (cd "$SERVERS_DIR/tansu" && exec "$tansu" broker \
            --listener-url "tcp://127.0.0.1:$port" \
            --advertised-listener-url "tcp://127.0.0.1:$port" \
            --storage-engine "sqlite://broker.db") > "$SERVERS_DIR/tansu.log" 2>&1 &
        TANSU_PID=$!
        if wait_ready tansu "$TANSU_PID" 30 port_open "$port"; then
            export SHOPLENS_TEST_KAFKA_BROKERS="127.0.0.1:$port"
            return 0
        fi
        show_logs "$SERVERS_DIR/tansu.log"
        stop_pid "$TANSU_PID"
        TANSU_PID=""
        echo "tansu start attempt $attempt of $SERVER_START_ATTEMPTS failed" >&2
    done
    return 1
}

# The newest PostgreSQL server programs installed (apt `postgresql`), or nothing.
postgres_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

# Runs a PostgreSQL program as the `postgres` user when we are root (the server refuses to run
# as root), else as ourselves.
as_postgres() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# A PostgreSQL server on 127.0.0.1 for the services' tests on PostgreSQL: its own data dir,
# port and a random password (scram); exports SHOPLENS_TEST_POSTGRES_URL (a superuser on the
# maintenance database; the tests create their own databases beside it).
start_postgres() {
    local bin attempt port password
    bin=$(postgres_bin)
    if [[ -z "$bin" ]]; then
        echo "installing postgresql (apt)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        bin=$(postgres_bin)
        [[ -n "$bin" ]] || { echo "no PostgreSQL server programs" >&2; return 1; }
    fi
    # Outside SERVERS_DIR (root's, mode 700): the server's user must reach its directory.
    PG_DIR=$(mktemp -d -t shoplens-postgres.XXXXXX) || return 1
    chmod 755 "$PG_DIR"
    [[ $(id -u) -ne 0 ]] || chown postgres "$PG_DIR"
    password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
    printf '%s\n' "$password" > "$PG_DIR/pw"
    [[ $(id -u) -ne 0 ]] || chown postgres "$PG_DIR/pw"
    as_postgres "$bin/initdb" -D "$PG_DIR/data" -U shoplens --auth=scram-sha-256 \
        --pwfile="$PG_DIR/pw" --encoding=UTF8 > "$PG_DIR/initdb.log" 2>&1 \
        || { show_logs "$PG_DIR/initdb.log"; return 1; }
    rm -f "$PG_DIR/pw"
    for attempt in $(seq 1 "$SERVER_START_ATTEMPTS"); do
        port=$(free_port) || return 1
        # fsync off: a test server's data does not outlive the run.
        if as_postgres "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
            -o "-h 127.0.0.1 -p $port -k $PG_DIR -c fsync=off -c max_connections=400" \
            start > /dev/null 2>&1; then
            PG_BIN="$bin"
            export SHOPLENS_TEST_POSTGRES_URL="postgres://shoplens:$password@127.0.0.1:$port/postgres"
            return 0
        fi
        show_logs "$PG_DIR/server.log"
        echo "PostgreSQL start attempt $attempt of $SERVER_START_ATTEMPTS failed" >&2
    done
    return 1
}

stop_postgres() {
    if [[ -n "${PG_BIN:-}" && -n "${PG_DIR:-}" ]]; then
        as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop > /dev/null 2>&1 || true
    fi
    [[ -z "${PG_DIR:-}" ]] || rm -rf "$PG_DIR"
    PG_DIR=""
    PG_BIN=""
}

stop_servers() {
    stop_pid "$CH_PID"
    stop_pid "$TANSU_PID"
    stop_postgres
    CH_PID=""
    TANSU_PID=""
    if [[ -n "$SERVERS_DIR" ]]; then
        rm -rf "$SERVERS_DIR"
        SERVERS_DIR=""
    fi
}

start_servers() {
    SERVERS_DIR=$(mktemp -d -t shoplens-servers.XXXXXX) || return 1
    trap stop_servers EXIT
    start_clickhouse || { echo "ClickHouse did not start" >&2; return 1; }
    start_kafka || { echo "the tansu Kafka broker did not start" >&2; return 1; }
    start_postgres || { echo "PostgreSQL did not start" >&2; return 1; }
    echo "ClickHouse at $SHOPLENS_TEST_CLICKHOUSE_URL, Kafka broker at $SHOPLENS_TEST_KAFKA_BROKERS, PostgreSQL on port ${SHOPLENS_TEST_POSTGRES_URL##*:} (logs in $SERVERS_DIR, $PG_DIR)" >&2
}
