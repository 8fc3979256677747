//! How the read model is configured (`read_model` in every binary's config): which store
//! holds it and that store's settings. The writer opens the store with it; readers (the
//! analytics server, its query workers, `export`) open the same store with the same section.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Which store holds the read model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadModelKind {
    /// Parquet files on this machine, queried in-process with DataFusion (no servers).
    #[default]
    Embedded,
    /// A ClickHouse server (materialized views keep the aggregates).
    Clickhouse,
}

/// The read model's store and its settings (only the chosen kind's settings are used).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadModelConfig {
    /// `embedded` (default) or `clickhouse`.
    pub kind: ReadModelKind,
    pub embedded: EmbeddedConfig,
    pub clickhouse: ClickHouseConfig,
}

/// Rejects a read-model configuration that cannot work, without connecting (for
/// `--check-config`): a ClickHouse URL that is not http(s), a database name ClickHouse
/// would refuse.
pub fn validate_read_model(config: &ReadModelConfig) -> Result<(), ConfigError> {
    if config.kind == ReadModelKind::Clickhouse {
        let ch = &config.clickhouse;
        if !(ch.url.starts_with("http://") || ch.url.starts_with("https://")) {
            return Err(ConfigError::ClickHouseUrl(ch.url.clone()));
        }
        if ch.database.is_empty()
            || !ch
                .database
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(ConfigError::ClickHouseDatabase(ch.database.clone()));
        }
    }
    Ok(())
}

/// Settings of the embedded read model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedConfig {
    /// The store's directory: the `LIVE` pointer and one `gen-NNNN` directory per generation.
    pub dir: PathBuf,
    /// Sync files and directories to disk before a commit returns. Turning it off is only
    /// safe where losing the last commits on power loss is acceptable (tests, benchmarks).
    pub fsync: bool,
    /// How many files of one compaction level a raw or dead-letter table collects before they
    /// are merged into one file of the next level (when several tables come due at once, over
    /// the next few applies rather than all in one).
    pub compact_fan_in: usize,
    /// Files with at least this many rows are not merged any further.
    pub compact_max_rows: u64,
    /// How many delta files an aggregate table collects before they are replaced by one
    /// snapshot of the whole table (later only once the deltas hold as many rows as the
    /// last snapshot, and at the latest at 16 times this many files).
    pub aggregate_snapshot_after: usize,
    /// At most this many event ids (of whole recent files) are kept in memory for dedup;
    /// older ids are looked up in the files whose id range covers them. A duplicate is
    /// almost always recent (a relay or consumer retry), and new ids are above the largest
    /// held, which needs no look-up: 500,000 ids are 8 MB.
    pub dedup_cache_ids: usize,
    /// Files replaced by compaction are deleted this many seconds later (or at the next
    /// open), so a reader that is scanning them can finish.
    pub retired_grace_secs: u64,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            dir: PathBuf::from("data/readmodel"),
            fsync: true,
            compact_fan_in: 16,
            compact_max_rows: 4_000_000,
            aggregate_snapshot_after: 64,
            dedup_cache_ids: 500_000,
            retired_grace_secs: 60,
        }
    }
}

/// Where and how to reach ClickHouse.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// The HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// Base name: generation `g` lives in database `{database}_g{g}`, the live pointer in
    /// `{database}_meta`. Letters, digits and `_` only.
    pub database: String,
    /// The ClickHouse user the ingest worker writes as.
    pub user: String,
    /// The user's password; never logged (`Debug` shows `***`).
    pub password: String,
    /// The user the analytics server reads as: a read-only one with server-side limits
    /// (`readonly` profile, `max_execution_time`, `max_memory_usage`, `max_result_rows`).
    /// Empty: `user`.
    pub reader_user: String,
    /// Its password; never logged.
    pub reader_password: String,
    /// How long one request (query or insert, including its materialized views) may take
    /// before the sink reports the store unavailable.
    pub request_timeout_ms: u64,
}

impl Default for ClickHouseConfig {
    fn default() -> ClickHouseConfig {
        ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            database: "shoplens".into(),
            user: "default".into(),
            password: String::new(),
            reader_user: String::new(),
            reader_password: String::new(),
            request_timeout_ms: 30_000,
        }
    }
}

impl fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &"***")
            .field("reader_user", &self.reader_user)
            .field("reader_password", &"***")
            .field("request_timeout_ms", &self.request_timeout_ms)
            .finish()
    }
}

impl ClickHouseConfig {
    /// The user and password readers connect with.
    pub fn reader(&self) -> (&str, &str) {
        if self.reader_user.is_empty() {
            (&self.user, &self.password)
        } else {
            (&self.reader_user, &self.reader_password)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_config_has_defaults_and_rejects_unknown_fields() {
        let config: EmbeddedConfig = serde_json::from_str(r#"{"fsync": false}"#).unwrap();
        assert_eq!(
            config,
            EmbeddedConfig {
                fsync: false,
                ..EmbeddedConfig::default()
            }
        );
        assert_eq!(config.dir, PathBuf::from("data/readmodel"));
        assert!(serde_json::from_str::<EmbeddedConfig>(r#"{"fsynk": false}"#).is_err());
    }

    #[test]
    fn only_a_chosen_clickhouse_store_is_validated() {
        let mut config = ReadModelConfig::default();
        config.clickhouse.url = "ftp://x".into();
        assert!(validate_read_model(&config).is_ok());
        config.kind = ReadModelKind::Clickhouse;
        let err = validate_read_model(&config).unwrap_err();
        assert!(matches!(err, ConfigError::ClickHouseUrl(_)), "{err}");
        assert_eq!(
            err.to_string(),
            "read_model.clickhouse.url must be an http(s) URL, got `ftp://x`"
        );
        config.clickhouse.url = "https://ch:8443".into();
        config.clickhouse.database = "shop-lens".into();
        let err = validate_read_model(&config).unwrap_err();
        assert!(matches!(err, ConfigError::ClickHouseDatabase(_)), "{err}");
        config.clickhouse.database = "shop_lens".into();
        assert!(validate_read_model(&config).is_ok());
    }

    #[test]
    fn clickhouse_config_defaults_reject_unknown_fields_and_hide_the_password() {
        let c: ClickHouseConfig =
            serde_json::from_str(r#"{"password": "s3cret", "reader_password": "r3ader"}"#).unwrap();
        assert_eq!(c.url, "http://127.0.0.1:8123");
        assert_eq!(c.database, "shoplens");
        assert_eq!(c.request_timeout_ms, 30_000);
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(!format!("{c:?}").contains("r3ader"));
        assert_eq!(c.reader(), ("default", "s3cret"));
        let err = serde_json::from_str::<ClickHouseConfig>(r#"{"databse": "x"}"#).unwrap_err();
        assert!(err.to_string().contains("databse"), "{err}");
    }
}
