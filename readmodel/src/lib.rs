//! What the read model's writer and its readers share.
//!
//! The ingest worker writes the read model and the analytics server (and its query workers
//! and the `export` command) read it; both must agree on its tables and their meaning
//! ([`tables`], with the raw tables of [`shoplens_contract::tables`]), on the aggregates'
//! definition ([`aggregate`], the Rust reference both back ends must match), on how fresh it
//! is ([`freshness`]), on how it is configured ([`config`]), and on where each back end keeps
//! its generations and its live pointer: the embedded store's `LIVE` file, `gen-NNNN`
//! directories and `manifest.json` ([`embedded`], with the read-only [`embedded::Snapshot`]),
//! and ClickHouse's `{database}_g{n}` and `{database}_meta` databases ([`clickhouse`]).
//!
//! Errors are typed: [`Error`] for the store's files (corrupt, or I/O), which the writer and
//! the readers map into their own errors, and [`ConfigError`] for a configuration that
//! cannot work.
//!
//! **Invariant:** depends on the contract crate only among ours: no bus, no kit, no Kafka
//! client, no ClickHouse client, no DataFusion. A reader of the read model links this crate,
//! never the writer's machinery.

pub mod aggregate;
pub mod clickhouse;
pub mod config;
pub mod embedded;
mod error;
pub mod freshness;
pub mod tables;

pub use error::{ConfigError, Error, Result};
