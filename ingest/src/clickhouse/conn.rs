//! The connection the store and its sinks share: one ClickHouse client, every request within
//! the configured timeout, RowBinary inserts, and ClickHouse's errors as sink errors.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::clickhouse::Client;
use bytes::Bytes;

use crate::IngestError;
use crate::sink::SinkResult;

/// A ClickHouse error as a sink error: anything on the way (network, timeout, an HTTP error
/// answer) is `Unavailable` and worth a retry; data the client cannot read is `Corrupt`.
fn ch_err(context: &str, e: ::clickhouse::error::Error) -> IngestError {
    use ::clickhouse::error::Error as E;
    match e {
        E::Network(_) | E::TimedOut | E::BadResponse(_) | E::Compression(_) => {
            IngestError::Unavailable(format!("{context}: {e}"))
        }
        other => IngestError::Corrupt(format!("{context}: {other}")),
    }
}

pub(super) fn corrupt(msg: impl Into<String>) -> IngestError {
    IngestError::Corrupt(msg.into())
}

pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(super) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// One client and its request timeout, shared by the store and its sinks.
#[derive(Clone)]
pub(super) struct Conn {
    pub(super) client: Client,
    pub(super) timeout: Duration,
}

impl Conn {
    /// Runs one request within the timeout.
    pub(super) async fn run<T>(
        &self,
        context: &str,
        fut: impl Future<Output = ::clickhouse::error::Result<T>>,
    ) -> SinkResult<T> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(result) => result.map_err(|e| ch_err(context, e)),
            Err(_) => Err(IngestError::Unavailable(format!(
                "{context}: no answer within {:?}",
                self.timeout
            ))),
        }
    }

    pub(super) async fn execute(&self, sql: &str) -> SinkResult<()> {
        self.run(sql, self.client.query(sql).execute()).await
    }

    /// Sends RowBinary rows to `table` (qualified) in one `INSERT`.
    pub(super) async fn insert(&self, table: &str, rows: Vec<u8>) -> SinkResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let context = format!("insert into {table}");
        let client = &self.client;
        self.run(&context, async move {
            let mut insert =
                client.insert_formatted_with(format!("INSERT INTO {table} FORMAT RowBinary"));
            insert.send(Bytes::from(rows)).await?;
            insert.end().await
        })
        .await
    }
}

/// A concurrent `CREATE ... IF NOT EXISTS` of the same object may still lose the race with
/// "already exists"; that is success.
pub(super) fn already_exists(e: IngestError) -> SinkResult<()> {
    match &e {
        IngestError::Unavailable(m) if m.contains("already exists") => Ok(()),
        _ => Err(e),
    }
}
