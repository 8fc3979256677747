//! A service's own SQLite database: one writer connection (SQLite allows one writer at a
//! time; a single connection makes that explicit and avoids `SQLITE_BUSY`), a pool of
//! readers (WAL mode lets them run beside the writer), and migrations.
//!
//! Migration versions: the kit's shared tables (outbox, idempotency) use versions below 100;
//! each service numbers its own from 100 up, so both sets live in one `_sqlx_migrations`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

#[derive(Clone, Debug)]
pub struct Db {
    /// The one connection that writes. Begin every state change here.
    pub writer: SqlitePool,
    /// Read-only queries.
    pub reader: SqlitePool,
}

impl Db {
    /// Opens (creating if missing) the database and applies the kit's and the service's
    /// migrations.
    pub async fn open(url: &str, service_migrations: Migrator) -> Result<Db, crate::Error> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|source| crate::Error::DatabaseUrl {
                url: url.to_owned(),
                source,
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(|source| crate::Error::Database {
                url: url.to_owned(),
                source,
            })?;
        // An in-memory database exists once per connection: read through the writer.
        let reader = if url.contains(":memory:") {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(options.read_only(true))
                .await
                .map_err(|source| crate::Error::Database {
                    url: url.to_owned(),
                    source,
                })?
        };
        let mut shared = sqlx::migrate!("./migrations");
        shared.set_ignore_missing(true);
        shared
            .run(&writer)
            .await
            .map_err(|source| crate::Error::Migration {
                which: "shared",
                source,
            })?;
        let mut own = service_migrations;
        own.set_ignore_missing(true);
        own.run(&writer)
            .await
            .map_err(|source| crate::Error::Migration {
                which: "service's",
                source,
            })?;
        Ok(Db { writer, reader })
    }

    /// Begins a write transaction.
    pub async fn begin(&self) -> sqlx::Result<Transaction<'static, Sqlite>> {
        self.writer.begin().await
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// Fetches the rows whose `id` is one of `ids`: `select` is the query up to the `IN`, e.g.
/// `"SELECT * FROM customers WHERE id IN"`.
pub async fn fetch_by_ids<T>(
    pool: &SqlitePool,
    select: &str,
    ids: &[String],
) -> sqlx::Result<Vec<T>>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
{
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!("{select} ({})", vec!["?"; ids.len()].join(","));
    let mut query = sqlx::query_as::<_, T>(&sql);
    for id in ids {
        query = query.bind(id);
    }
    query.fetch_all(pool).await
}
