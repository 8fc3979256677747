#!/bin/bash
# Creates the read-only ClickHouse user the analytics server reads as (the official image
# runs this once, when it initialises an empty data directory). The ingest worker writes as
# CLICKHOUSE_USER; the analytics server can only read, within server-side limits, so even a
# query that got past its own checks cannot write, run for ever or exhaust the server.
set -euo pipefail
: "${CLICKHOUSE_READER_PASSWORD:?set CLICKHOUSE_READER_PASSWORD}"
clickhouse client --user "$CLICKHOUSE_USER" --password "$CLICKHOUSE_PASSWORD" --multiquery <<SQL
CREATE SETTINGS PROFILE IF NOT EXISTS shoplens_reader_limits SETTINGS
    readonly = 1,
    max_execution_time = 3600,
    max_memory_usage = 4000000000,
    max_result_rows = 100000000,
    result_overflow_mode = 'throw';
CREATE USER IF NOT EXISTS shoplens_reader
    IDENTIFIED WITH sha256_password BY '${CLICKHOUSE_READER_PASSWORD}'
    SETTINGS PROFILE 'shoplens_reader_limits';
GRANT SELECT ON *.* TO shoplens_reader;
SQL
