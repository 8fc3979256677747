//! The ClickHouse back end: DataFusion table providers over the live generation's database.
//!
//! Read-only by construction: every request is a `SELECT` this module builds from our own
//! schemas, sent over ClickHouse's HTTP interface; nothing here creates or inserts anything.
//! The SQL keeps to what works on 18.16 and current versions (`sql/README.md`).
//!
//! - **Live generation.** Every scan, and [`ReadModel::freshness`], reads the live pointer the
//!   way the ingest store does (`argMax(generation, set_at)` over `{base}_meta.live`), cached
//!   for at most [`LIVE_TTL`], so a blue/green switch shows within a second. No meta
//!   database, or no row in it yet, means no generation: empty tables, freshness `(0, none)`.
//! - **Merged aggregates.** A SummingMergeTree table holds partial-sum rows until merges
//!   catch up, so an aggregate is read as `SELECT keys, sum(..) .. GROUP BY keys HAVING
//!   sum(contributions) != 0`: one row per key, the keys of the Rust reference (as
//!   `ClickHouseSink::aggregate` reads them).
//! - **Pushdown.** Only the projected columns are selected. A filter is pushed (`Exact`) only
//!   where ClickHouse gives exactly DataFusion's answer: comparisons, BETWEEN, IN lists and
//!   IS [NOT] NULL between one column and literals of its own type, and AND/OR/NOT of those.
//!   Three-valued logic differs between ClickHouse versions (18.16: `NULL IN (..)` is 0,
//!   `NULL AND 0` is NULL), so a filter is rendered two-valued, as "DataFusion's value is
//!   TRUE" (or FALSE, under NOT) with nullable columns guarded. On an aggregate, filters on
//!   key columns go before the GROUP BY, the others after it. A LIMIT is pushed too: every
//!   filter DataFusion hands the scan is then one ClickHouse applies exactly.
//! - **Rows** come as `FORMAT Native` (ClickHouse's columnar blocks, binary), decoded
//!   straight into Arrow arrays while the body streams in and cut into batches of the
//!   session's size. ClickHouse's own forms (Int64 milliseconds, `Date` as its day
//!   number through `toInt32`, the dead letters' payload bytes through `hex`) become the
//!   exposed Arrow types after decoding, so both back ends return identical batches.
//!
//! One concern a file: `client` (the HTTP requests and their errors), `live` (the live
//! pointer and the freshness watermark), `layout` (how each column is stored and read),
//! `filter` (filter translation), `scan` (a scan's SQL and how its rows are converted),
//! `provider` (the `TableProvider`), `exec` (its execution plan), `pushdown` (whole
//! sub-plans as one ClickHouse statement), `reader` (the streaming reader of an answer) and
//! `native` (the `Native` format's blocks as Arrow arrays).

mod client;
mod exec;
mod filter;
mod layout;
mod live;
mod native;
mod provider;
mod pushdown;
mod reader;
mod scan;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use reqwest::header::{HeaderMap, HeaderValue};
use shoplens_readmodel::config::{ClickHouseConfig, ReadModelConfig, ReadModelKind};

use crate::read_model::{ReadModel, ReadModelError, Table, Watermark};
use client::{Inner, http_error, unavailable};
pub use filter::quote;
pub use live::LIVE_TTL;
use provider::ClickHouseTable;
pub use pushdown::{RemotePlanner, push_down};
pub use scan::scan_sql;

/// The read model in ClickHouse, read through its HTTP interface. Cheap to clone.
#[derive(Clone)]
pub struct ClickHouseReadModel {
    inner: Arc<Inner>,
}

impl fmt::Debug for ClickHouseReadModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseReadModel")
            .field("database", &self.inner.base)
            .finish_non_exhaustive()
    }
}

impl ClickHouseReadModel {
    /// A reader of the read model `config` names. Does not need ClickHouse to be up: the
    /// analytics server starts anyway and each query reports the store unavailable until it
    /// answers. Fails only on a configuration no request could use.
    pub async fn connect(config: &ClickHouseConfig) -> Result<ClickHouseReadModel, ReadModelError> {
        let base = &config.database;
        if base.is_empty() || !base.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(unavailable(format!(
                "ClickHouse database base name `{base}` must be letters, digits and `_`"
            )));
        }
        let url = reqwest::Url::parse(&config.url)
            .map_err(|e| unavailable(format!("ClickHouse URL `{}`: {e}", config.url)))?;
        let mut headers = HeaderMap::new();
        // A reader: the read-only user when one is configured.
        let (user, password) = config.reader();
        let user = HeaderValue::from_str(user)
            .map_err(|_| unavailable("the ClickHouse user name is not a valid HTTP header"))?;
        let mut key = HeaderValue::from_str(password)
            .map_err(|_| unavailable("the ClickHouse password is not a valid HTTP header"))?;
        key.set_sensitive(true);
        headers.insert("X-ClickHouse-User", user);
        headers.insert("X-ClickHouse-Key", key);
        let timeout = Duration::from_millis(config.request_timeout_ms.max(1));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(timeout)
            // Between two reads of an answer, not for all of it: an export streams for hours.
            .read_timeout(timeout)
            // Below ClickHouse's keep-alive timeout (10 s on 18.16), so a pooled connection
            // is never one the server is closing.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| unavailable(format!("HTTP client: {}", http_error(e))))?;
        let model = ClickHouseReadModel {
            inner: Arc::new(Inner {
                config: config.clone(),
                http,
                url: url.to_string(),
                base: base.clone(),
                timeout,
                live: Mutex::new(None),
            }),
        };
        let mut shown = url.clone();
        let _ = shown.set_password(None);
        match model.inner.live().await {
            Ok(generation) => tracing::info!(
                url = %shown,
                database = %base,
                ?generation,
                "reading the ClickHouse read model"
            ),
            Err(e) => tracing::warn!(
                url = %shown,
                error = %e,
                "ClickHouse not readable yet; queries fail until it is"
            ),
        }
        Ok(model)
    }
}

#[async_trait]
impl ReadModel for ClickHouseReadModel {
    fn kind(&self) -> &'static str {
        "clickhouse"
    }

    fn config(&self) -> ReadModelConfig {
        ReadModelConfig {
            kind: ReadModelKind::Clickhouse,
            clickhouse: self.inner.config.clone(),
            ..ReadModelConfig::default()
        }
    }

    fn provider(&self, table: Table) -> Arc<dyn TableProvider> {
        Arc::new(ClickHouseTable {
            model: self.inner.clone(),
            table,
            schema: table.schema(),
        })
    }

    async fn watermark(&self) -> Result<Watermark, ReadModelError> {
        match self.inner.live().await? {
            None => Ok(Watermark::default()),
            Some(generation) => self.inner.watermark(generation).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_names_are_refused_before_any_request() {
        let config = ClickHouseConfig {
            database: "x; DROP DATABASE y".into(),
            ..ClickHouseConfig::default()
        };
        assert!(matches!(
            ClickHouseReadModel::connect(&config).await,
            Err(ReadModelError::Unavailable(_))
        ));
    }
}
