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
    /// For the one request the `clickhouse` crate cannot make: an `INSERT .. SELECT` over
    /// rows sent beside the query as external data ([`Conn::insert_where`]).
    pub(super) http: reqwest::Client,
    pub(super) url: String,
    pub(super) user: String,
    pub(super) password: String,
}

impl Conn {
    /// Runs one request within the timeout.
    pub(super) async fn run<T>(
        &self,
        context: &str,
        fut: impl Future<Output = ::clickhouse::error::Result<T>>,
    ) -> SinkResult<T> {
        self.within(context, async { fut.await.map_err(|e| ch_err(context, e)) })
            .await
    }

    /// `fut` within the request timeout; after it, `Unavailable`.
    async fn within<T>(
        &self,
        context: &str,
        fut: impl Future<Output = SinkResult<T>>,
    ) -> SinkResult<T> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(IngestError::Unavailable(format!(
                "{context}: no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// Waits, within the request timeout, until every insert into database `db` that is
    /// running on the server now has ended (one whose client gave up may still run; so may
    /// one that passed a fence check just before a claim).
    pub(super) async fn wait_for_inserts(&self, db: &str) -> SinkResult<()> {
        let sql = "SELECT query_id FROM system.processes WHERE startsWith(query, ?)";
        let prefix = format!("INSERT INTO {db}.");
        let running = || async {
            self.run(
                sql,
                self.client
                    .query(sql)
                    .bind(prefix.as_str())
                    .fetch_all::<String>(),
            )
            .await
        };
        let mut left = running().await?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        while !left.is_empty() {
            if tokio::time::Instant::now() >= deadline {
                return Err(IngestError::Unavailable(format!(
                    "{} inserts into {db} still running; try again later",
                    left.len()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = running().await?;
            left.retain(|id| now.contains(id));
        }
        Ok(())
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

impl Conn {
    /// Sends RowBinary rows of `structure` (`name Type, ..`: the table's columns in order)
    /// and inserts them into `table` (qualified) only if `condition` holds when the insert
    /// starts, all in one request: `INSERT INTO table SELECT * FROM incoming WHERE condition`,
    /// `incoming` being the rows sent as ClickHouse external data. One `INSERT`: all or
    /// nothing, and the table's views see exactly the rows inserted.
    pub(super) async fn insert_where(
        &self,
        table: &str,
        structure: &str,
        rows: Vec<u8>,
        condition: &str,
    ) -> SinkResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let context = format!("insert into {table}");
        let query = format!("INSERT INTO {table} SELECT * FROM incoming WHERE {condition}");
        // A boundary that no RowBinary body of ours can hold by chance.
        let boundary = format!("shoplens-{}", uuid::Uuid::new_v4().simple());
        let mut body = Vec::with_capacity(rows.len() + 256);
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"incoming\"; \
                 filename=\"incoming\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&rows);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let request = self
            .http
            .post(&self.url)
            .query(&[
                ("query", query.as_str()),
                ("incoming_structure", structure),
                ("incoming_format", "RowBinary"),
            ])
            .header("X-ClickHouse-User", &self.user)
            .header("X-ClickHouse-Key", &self.password)
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body);
        let sent = async {
            let response = request
                .send()
                .await
                .map_err(|e| IngestError::Unavailable(format!("{context}: {e}")))?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let text = response.text().await.unwrap_or_default();
            Err(IngestError::Unavailable(format!(
                "{context}: {status}: {}",
                text.trim()
            )))
        };
        self.within(&context, sent).await
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
