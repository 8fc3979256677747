//! Test scaffolding shared by the workspace's tests and the benchmark harness, kept out of
//! the production crates: [`services`] starts real services on a scratch embedded log,
//! [`clickhouse`] runs private ClickHouse servers, [`kafka`] names the test suite's broker,
//! [`events`] generates seeded, shop-shaped event streams.

pub mod clickhouse;
pub mod events;
pub mod kafka;
pub mod services;
