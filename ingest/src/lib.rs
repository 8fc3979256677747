//! The ingest worker of the CQRS read side.
//!
//! It consumes the services' events from the bus (embedded log or Kafka), validates them
//! against the contract, batches them per raw table as Arrow `RecordBatch`es, and writes them
//! to a [`sink::Sink`]: ClickHouse ([`clickhouse`]) or the embedded Parquet store
//! ([`embedded`]). The read model is the raw tables plus the pre-aggregated tables of
//! [`model`]. ARCHITECTURE.md explains the exactly-once design.

pub mod aggregate;
pub mod api;
pub mod clickhouse;
pub mod client;
pub mod embedded;
pub mod metrics;
pub mod model;
pub mod rows;
pub mod sink;
pub mod startup;
pub mod supervisor;
pub mod worker;
