//! The ingest worker of the CQRS read side.
//!
//! It consumes the services' events from the bus (embedded log or Kafka), validates them
//! against the contract, batches them per raw table as Arrow `RecordBatch`es, and writes them
//! to a [`sink::Sink`]: ClickHouse ([`clickhouse`]) or the embedded Parquet store
//! ([`embedded`]). The read model is the raw tables plus the pre-aggregated tables of
//! [`shoplens_readmodel::tables`], whose definitions, configuration and file formats this
//! crate shares with the readers through `shoplens-readmodel`. ARCHITECTURE.md explains the
//! exactly-once design.

pub mod api;
pub mod clickhouse;
pub mod client;
pub mod embedded;
mod error;
pub mod failpoint;
pub mod metrics;
pub mod sink;
pub mod startup;
pub mod supervisor;
pub mod worker;

pub use error::{IngestError, Result};
