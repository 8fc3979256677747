//! Integration tests of the analytics server: real servers on port 0, a real embedded read
//! model in a temporary directory, the real ClickHouse at `SHOPLENS_TEST_CLICKHOUSE_URL`.

mod access;
mod api;
mod bi_tools;
mod cache;
mod clickhouse;
mod grafana;
mod hostile;
mod page;
mod pg;
mod pg_shapes;
mod rollup;
mod slt;
mod support;
