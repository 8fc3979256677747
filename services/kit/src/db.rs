//! A service's own database: SQLite (the embedded default) or PostgreSQL (a shop past one
//! machine, with several replicas of a service sharing one database), chosen by the URL.
//!
//! Invariants the services rely on, the same on both:
//! - Every state change runs in one transaction from [`Db::begin`], and reads the record it
//!   changes with [`for_update`]: on PostgreSQL that locks the row until the commit, so two
//!   replicas' concurrent changes of one record run one after the other and the second sees
//!   the first (no lost update). SQLite has one writer connection, which already runs write
//!   transactions one at a time.
//! - SQL is written once, with `$1, $2, ...` parameters (both drivers accept them), timestamps
//!   as RFC 3339 text ([`stamp`], read back through [`Stamp`]) and money as decimal text, so
//!   both databases hold the same values.
//! - Migrations live in `migrations/sqlite` and `migrations/postgres` of each crate, with the
//!   same versions and the same tables. The kit's shared tables (outbox, idempotency) use
//!   versions below 100; each service numbers its own from 100 up, so both sets live in one
//!   `_sqlx_migrations`.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{MigrateDatabase, Migrator};

/// A pool of connections to a service's database, whichever it is.
pub type Pool = sqlx::AnyPool;
/// One connection (or a transaction, which dereferences to one).
pub type Conn = sqlx::AnyConnection;
/// A write transaction.
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// Which database a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// `sqlite:...` or `postgres://...` (also `postgresql://`).
    pub fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }

    /// The database behind an open connection.
    pub fn of(conn: &Conn) -> Backend {
        if conn.backend_name() == "PostgreSQL" {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }
}

/// A crate's migrations for both databases: [`migrations!`](crate::migrations) builds it
/// from the calling crate's `migrations/sqlite` and `migrations/postgres`.
pub struct Migrations {
    pub sqlite: Migrator,
    pub postgres: Migrator,
}

/// The calling crate's [`Migrations`], embedded at compile time.
#[macro_export]
macro_rules! migrations {
    () => {
        $crate::db::Migrations {
            sqlite: ::sqlx::migrate!("./migrations/sqlite"),
            postgres: ::sqlx::migrate!("./migrations/postgres"),
        }
    };
}

/// How a service connects to its database.
#[derive(Clone, Debug)]
pub struct DbOptions {
    /// Most connections one replica opens to PostgreSQL (SQLite: one writer, eight readers).
    pub max_connections: u32,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            max_connections: 10,
        }
    }
}

#[derive(Clone)]
pub struct Db {
    /// Begin every state change here.
    pub writer: Pool,
    /// Read-only queries (on PostgreSQL the same pool as the writer).
    pub reader: Pool,
    backend: Backend,
    /// To open connections outside the pools (the relay's leadership session). Holds the
    /// password of a PostgreSQL URL: never printed.
    url: String,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend)
            .field("url", &redact(&self.url))
            .finish()
    }
}

impl Db {
    /// Opens (creating if missing) the database and applies the kit's and the service's
    /// migrations.
    pub async fn open(
        url: &str,
        options: &DbOptions,
        service_migrations: Migrations,
    ) -> Result<Db, crate::Error> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url).ok_or_else(|| crate::Error::DatabaseUrl {
            url: redact(url),
            reason: "must start with sqlite: or postgres://".into(),
        })?;
        let opened = |source| crate::Error::Database {
            url: redact(url),
            source,
        };
        let (writer, reader) = match backend {
            Backend::Sqlite => {
                let writer = AnyPoolOptions::new()
                    .max_connections(1)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            for pragma in [
                                "PRAGMA journal_mode = WAL",
                                "PRAGMA synchronous = FULL",
                                "PRAGMA busy_timeout = 10000",
                                "PRAGMA foreign_keys = ON",
                            ] {
                                sqlx::query(pragma).execute(&mut *conn).await?;
                            }
                            Ok(())
                        })
                    })
                    .connect(&sqlite_mode(url, "rwc"))
                    .await
                    .map_err(opened)?;
                // An in-memory database exists once per connection: read through the writer.
                let reader = if url.contains(":memory:") {
                    writer.clone()
                } else {
                    AnyPoolOptions::new()
                        .max_connections(8)
                        .after_connect(|conn, _| {
                            Box::pin(async move {
                                sqlx::query("PRAGMA busy_timeout = 10000")
                                    .execute(&mut *conn)
                                    .await
                                    .map(|_| ())
                            })
                        })
                        .connect(&sqlite_mode(url, "ro"))
                        .await
                        .map_err(opened)?
                };
                (writer, reader)
            }
            Backend::Postgres => {
                create_if_missing(url).await.map_err(opened)?;
                let pool = AnyPoolOptions::new()
                    .max_connections(options.max_connections.max(2))
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url)
                    .await
                    .map_err(opened)?;
                (pool.clone(), pool)
            }
        };
        let (shared, own) = match backend {
            Backend::Sqlite => (
                sqlx::migrate!("./migrations/sqlite"),
                service_migrations.sqlite,
            ),
            Backend::Postgres => (
                sqlx::migrate!("./migrations/postgres"),
                service_migrations.postgres,
            ),
        };
        // Several replicas starting together: the migrator takes a lock on PostgreSQL, so
        // one applies and the others find the migrations applied.
        for (which, mut migrator) in [("shared", shared), ("service's", own)] {
            migrator.set_ignore_missing(true);
            migrator
                .run(&writer)
                .await
                .map_err(|source| crate::Error::Migration { which, source })?;
        }
        Ok(Db {
            writer,
            reader,
            backend,
            url: url.to_owned(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Opens a connection of its own, outside the pools (it lives as long as the caller
    /// keeps it: a PostgreSQL session lock is held by it).
    pub async fn connect_alone(&self) -> sqlx::Result<Conn> {
        use sqlx::Connection;
        Conn::connect(&self.url).await
    }

    /// Begins a write transaction.
    pub async fn begin(&self) -> sqlx::Result<Tx> {
        self.writer.begin().await
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// A SQLite URL with its open `mode` (`rwc`, `ro`) unless it names one or is in memory.
fn sqlite_mode(url: &str, mode: &str) -> String {
    if url.contains(":memory:") || url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode={mode}")
    } else {
        format!("{url}?mode={mode}")
    }
}

/// Creates the PostgreSQL database the URL names when it does not exist yet (given the
/// right to; otherwise connecting fails with the server's own message). Two replicas
/// starting together may race: the loser finds it created.
async fn create_if_missing(url: &str) -> sqlx::Result<()> {
    if sqlx::Any::database_exists(url).await.unwrap_or(true) {
        return Ok(());
    }
    match sqlx::Any::create_database(url).await {
        Ok(()) => Ok(()),
        Err(e) if sqlx::Any::database_exists(url).await.unwrap_or(false) => {
            tracing::debug!(error = %e, "another replica created the database first");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The URL with its password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// ` FOR UPDATE` on PostgreSQL, nothing on SQLite: append it to the `SELECT` that reads the
/// record a write transaction is about to change (see the module's invariants).
pub fn for_update(conn: &Conn) -> &'static str {
    match Backend::of(conn) {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    }
}

/// How a timestamp is stored: RFC 3339 in UTC with as many fractional digits as it has
/// (what the SQLite driver wrote before the services also ran on PostgreSQL, so old rows
/// and new rows compare as text).
pub fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// A stored timestamp as read: `#[sqlx(try_from = "Stamp")]` on a `DateTime<Utc>` field.
#[derive(sqlx::Type)]
#[sqlx(transparent)]
pub struct Stamp(pub String);

impl TryFrom<Stamp> for DateTime<Utc> {
    type Error = chrono::ParseError;
    fn try_from(text: Stamp) -> Result<DateTime<Utc>, Self::Error> {
        parse_stamp(&text.0)
    }
}

/// Reads a stored timestamp (RFC 3339; also SQLite's `YYYY-MM-DD HH:MM:SS[.f]` in UTC).
pub fn parse_stamp(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|e| {
            chrono::NaiveDateTime::parse_from_str(text, "%F %T%.f")
                .map(|t| t.and_utc())
                .map_err(|_| e)
        })
}

/// FNV-1a of `bytes`: the same on every build and platform, for names and keys that other
/// processes must derive alike (a lock key, a test's database name).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `$first, $first+1, ..., $first+count-1`: the parameters of an `IN (...)` list.
pub fn params(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Fetches the rows whose `id` is one of `ids`: `select` is the query up to the `IN`, e.g.
/// `"SELECT * FROM customers WHERE id IN"`.
pub async fn fetch_by_ids<T>(pool: &Pool, select: &str, ids: &[String]) -> sqlx::Result<Vec<T>>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
{
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!("{select} ({})", params(1, ids.len()));
    let mut query = sqlx::query_as::<_, T>(&sql);
    for id in ids {
        query = query.bind(id);
    }
    query.fetch_all(pool).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_print() {
        assert_eq!(
            redact("postgres://order:s3cret@db:5432/order"),
            "postgres://order:***@db:5432/order"
        );
        assert_eq!(redact("sqlite://data/order.db"), "sqlite://data/order.db");
    }

    #[test]
    fn a_logged_config_hides_the_database_password() {
        let config = crate::config::ServiceConfig {
            database_url: "postgres://order:s3cret@db:5432/order".into(),
            ..Default::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("postgres://order:***@db:5432/order"),
            "{shown}"
        );
    }

    #[test]
    fn stamps_read_back_as_written() {
        let at = DateTime::parse_from_rfc3339("2026-12-06T10:11:12.345678Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(stamp(at), "2026-12-06T10:11:12.345678+00:00");
        assert_eq!(parse_stamp(&stamp(at)).unwrap(), at);
        assert_eq!(parse_stamp("2026-12-06 10:11:12.345678").unwrap(), at);
        assert!(parse_stamp("yesterday").is_err());
    }

    #[test]
    fn the_stable_hash_is_fnv_1a() {
        // The published FNV-1a 64-bit vectors: a lock key must not change between versions.
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn sqlite_urls_get_their_mode() {
        assert_eq!(
            sqlite_mode("sqlite://a.db", "rwc"),
            "sqlite://a.db?mode=rwc"
        );
        assert_eq!(sqlite_mode("sqlite::memory:", "ro"), "sqlite::memory:");
        assert_eq!(
            sqlite_mode("sqlite://a.db?mode=ro", "rwc"),
            "sqlite://a.db?mode=ro"
        );
        assert_eq!(params(2, 3), "$2, $3, $4");
    }
}
