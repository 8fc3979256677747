//! The analytics server: the sales dashboard (API and page), SQL for BI tools (Postgres wire
//! protocol and HTTP), DataFusion ad-hoc reports and CSV/Parquet export, over the read model
//! the ingest worker keeps (the embedded store's files or ClickHouse).
//!
//! Every answer says how fresh it is (`as_of`, `lag_ms`). Both back ends expose the same
//! tables to the same DataFusion SQL ([`engine`]), so they give the same numbers.

pub mod api;
pub mod audit;
mod bounded;
pub mod cache;
pub mod cli;
pub mod clickhouse;
pub mod config;
pub mod dashboard;
pub mod embedded;
pub mod engine;
mod error;
pub mod export;
pub mod guard;
pub mod isolation;
pub mod metrics;
pub mod pg;
mod plan;
pub mod privacy;
pub mod read_model;
pub mod reconcile;
pub mod rollup;
pub mod startup;
pub mod users;

pub use config::{AnalyticsConfig, PgConfig, ReconcileConfig};
pub use engine::{Engine, QueryConfig};
pub use error::{AnalyticsError, Result};
pub use read_model::{ReadModel, ReadModelError, Table};
pub use startup::{AnalyticsHandle, start};
