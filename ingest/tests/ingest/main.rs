//! Integration tests of the ingest crate, one binary: the sinks against real servers (the
//! ClickHouse server and Kafka broker that `scripts/test.sh` starts), the worker, parity.

mod clickhouse;
mod embedded;
mod failpoints;
mod limits;
mod outside_client;
mod pipeline;
mod servers;
mod support;
mod worker;
