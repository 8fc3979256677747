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

    /// The invariant of the crate docs, checked on the manifests: the contract crate is our
    /// only dependency (and it has none of ours), and no client or query engine is linked.
    #[test]
    fn depends_on_the_contract_only_among_ours_and_on_no_client_or_engine() {
        let deps = normal_dependencies(include_str!("../Cargo.toml"));
        assert!(deps.contains(&"shoplens-contract"), "{deps:?}");
        for dep in &deps {
            assert!(
                !dep.starts_with("shoplens-") || *dep == "shoplens-contract",
                "shoplens-readmodel must not depend on {dep}"
            );
            assert!(
                !["clickhouse", "rdkafka", "datafusion"].contains(dep),
                "shoplens-readmodel must not depend on {dep}"
            );
        }
        let contract = normal_dependencies(include_str!("../../services/contract/Cargo.toml"));
        assert!(!contract.is_empty());
        assert!(
            contract.iter().all(|d| !d.starts_with("shoplens-")),
            "{contract:?}"
        );
    }
}
