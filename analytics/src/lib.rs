//! The analytics server: the sales dashboard (API and page), SQL for BI tools (Postgres wire
//! protocol and HTTP), DataFusion ad-hoc reports and CSV/Parquet export, over the read model
//! the ingest worker keeps (the embedded store's files or ClickHouse).
//!
//! Every answer says how fresh it is (`as_of`, `lag_ms`). Both back ends expose the same
//! tables to the same DataFusion SQL ([`engine`]), so they give the same numbers.

pub mod api;
pub mod audit;
mod bounded;
pub mod cli;
pub mod clickhouse;
pub mod config;
pub mod dashboard;
pub mod embedded;
pub mod engine;
pub mod export;
pub mod guard;
pub mod isolation;
pub mod metrics;
pub mod pg;
pub mod privacy;
pub mod read_model;
pub mod reconcile;
pub mod startup;
pub mod users;

pub use config::{AnalyticsConfig, PgConfig, ReconcileConfig};
pub use engine::{Engine, QueryConfig, QueryError};
pub use read_model::{ReadModel, ReadModelError, Table};
pub use startup::{AnalyticsHandle, start};

#[cfg(test)]
mod tests {
    /// The crates a manifest's `[dependencies]` table names (not dev-dependencies).
    fn normal_dependencies(manifest: &str) -> Vec<&str> {
        manifest
            .lines()
            .skip_while(|l| l.trim() != "[dependencies]")
            .skip(1)
            .take_while(|l| !l.trim_start().starts_with('['))
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split(['.', '=', ' ']).next())
            .collect()
    }

    /// The invariant of the manifest: the server shares the read model's definitions with
    /// the writer through `shoplens-readmodel` and links neither the writer nor the composer
    /// (only tests may use the ingest crate, to write test data).
    #[test]
    fn never_links_the_ingest_worker_or_the_composer() {
        let deps = normal_dependencies(include_str!("../Cargo.toml"));
        assert!(deps.contains(&"shoplens-readmodel"), "{deps:?}");
        for forbidden in [
            "shoplens-ingest",
            "shoplens-composer",
            "shoplens-bus",
            "clickhouse",
        ] {
            assert!(
                !deps.contains(&forbidden),
                "shoplens-analytics must not depend on {forbidden}"
            );
        }
    }
}
