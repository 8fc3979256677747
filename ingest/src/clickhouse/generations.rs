//! The generations of the ClickHouse read model: one database per generation, created and
//! migrated when opened, listed and dropped, and the live pointer (`{base}_meta.live`) that
//! names the one readers see.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::clickhouse::Client;
use async_trait::async_trait;
use shoplens_readmodel::clickhouse::{
    create_live_table_sql, generation_database, generation_of, generation_prefix, live_pointer_sql,
    meta_database,
};
use shoplens_readmodel::config::ClickHouseConfig;
use tokio::sync::Mutex;

use super::conn::{Conn, already_exists, corrupt, now_ns};
use super::migrations::{create_database, migrate};
use super::rowbinary::RowBinary;
use super::sink::ClickHouseSink;
use crate::sink::{ReadModelStore, Sink, SinkResult};

/// Whether a name is safe to splice into SQL as a database name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The generations of one read model in ClickHouse, and its live pointer.
#[derive(Clone)]
pub struct ClickHouseStore {
    conn: Conn,
    base: String,
}

impl fmt::Debug for ClickHouseStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseStore")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl ClickHouseStore {
    /// Connects and creates the meta database with the live pointer if missing. Fails with
    /// `Unavailable` if ClickHouse cannot be reached.
    pub async fn connect(config: &ClickHouseConfig) -> SinkResult<ClickHouseStore> {
        if !valid_name(&config.database) {
            return Err(corrupt(format!(
                "database base name `{}` must be letters, digits and `_`",
                config.database
            )));
        }
        let client = Client::default()
            .with_url(config.url.clone())
            .with_user(config.user.clone())
            .with_password(config.password.clone())
            .with_validation(false);
        let store = ClickHouseStore {
            conn: Conn {
                client,
                timeout: Duration::from_millis(config.request_timeout_ms.max(1)),
                http: reqwest::Client::new(),
                url: config.url.clone(),
                user: config.user.clone(),
                password: config.password.clone(),
            },
            base: config.database.clone(),
        };
        create_database(&store.conn, &store.meta_database()).await?;
        store
            .conn
            .execute(&create_live_table_sql(&store.base))
            .await
            .or_else(already_exists)?;
        Ok(store)
    }

    /// The database that holds generation `generation`.
    pub fn database(&self, generation: u32) -> String {
        generation_database(&self.base, generation)
    }

    /// The database that holds the live pointer.
    pub fn meta_database(&self) -> String {
        meta_database(&self.base)
    }

    /// The database of the live generation, `None` before one was made live: what the
    /// analytics server queries.
    pub async fn live_database(&self) -> SinkResult<Option<String>> {
        Ok(self.live().await?.map(|g| self.database(g)))
    }

    /// Opens (creating and migrating) generation `generation` as its concrete sink.
    pub async fn open_sink(&self, generation: u32) -> SinkResult<ClickHouseSink> {
        let db = self.database(generation);
        create_database(&self.conn, &db).await?;
        migrate(&self.conn, &db).await?;
        Ok(ClickHouseSink {
            conn: self.conn.clone(),
            db,
            as_of: Mutex::new(None),
            repair_pending: Mutex::new(None),
            fence: std::sync::Mutex::new(None),
            structures: Default::default(),
        })
    }
}

#[async_trait]
impl ReadModelStore for ClickHouseStore {
    async fn open(&self, generation: u32) -> SinkResult<Arc<dyn Sink>> {
        Ok(Arc::new(self.open_sink(generation).await?))
    }

    async fn live(&self) -> SinkResult<Option<u32>> {
        let sql = live_pointer_sql(&self.base);
        let (generation, count) = self
            .conn
            .run(&sql, self.conn.client.query(&sql).fetch_one::<(u32, u64)>())
            .await?;
        Ok((count > 0).then_some(generation))
    }

    async fn set_live(&self, generation: u32) -> SinkResult<()> {
        if !self.generations().await?.contains(&generation) {
            return Err(corrupt(format!(
                "generation {generation} does not exist; open it first"
            )));
        }
        let mut row = RowBinary::default();
        row.u32(generation);
        row.i64(now_ns());
        // One row in one INSERT: readers see the old pointer or the new one.
        self.conn
            .insert(&format!("{}.live", self.meta_database()), row.0)
            .await
    }

    async fn generations(&self) -> SinkResult<Vec<u32>> {
        let sql = "SELECT name FROM system.databases WHERE startsWith(name, ?)";
        let prefix = generation_prefix(&self.base);
        let names = self
            .conn
            .run(
                sql,
                self.conn
                    .client
                    .query(sql)
                    .bind(prefix.as_str())
                    .fetch_all::<String>(),
            )
            .await?;
        let mut generations: Vec<u32> = names
            .iter()
            .filter_map(|n| generation_of(&self.base, n))
            .collect();
        generations.sort_unstable();
        Ok(generations)
    }

    fn shared(&self) -> bool {
        true
    }

    async fn drop_generation(&self, generation: u32) -> SinkResult<()> {
        if self.live().await? == Some(generation) {
            return Err(corrupt(format!(
                "generation {generation} is live; make another one live before dropping it"
            )));
        }
        self.conn
            .execute(&format!(
                "DROP DATABASE IF EXISTS {}",
                self.database(generation)
            ))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_they_reach_sql() {
        assert!(valid_name("shoplens_test_1"));
        assert!(!valid_name("x; DROP DATABASE y"));
        assert!(!valid_name(""));
        assert!(!valid_name("a-b"));
    }
}
